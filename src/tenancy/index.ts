export * from './schemas.js';
export { getAgent, listAgents, updateAgent, deleteAgent, toAgent, type AgentRow, type ListAgentsOptions } from './agents.js';
export { provisionAgent, type ProvisionOptions } from './provision.js';
export { DEFAULT_TENANT_ID } from '../auth/index.js';
export {
  DEFAULT_WORKSPACE_NAME,
  ensureDefaultTenant,
  createTenant,
  listTenants,
  findTenant,
  listWorkspaces,
  resolveWorkspace,
  createWorkspace,
  updateWorkspace,
  listUsers,
  getUser,
  createUser,
} from './tenants.js';
export { readActiveAgentCounts } from './metrics.js';
