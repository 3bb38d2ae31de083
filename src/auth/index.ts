export { ROLES, Role, MANAGERS, READERS, hasRole, TENANT_ID_PATTERN, TenantId, DEFAULT_TENANT_ID, type Principal } from './roles.js';
export { mintToken, createTokenVerifier, parseTtl, type TokenOptions, type TokenVerifier, type MintInput } from './tokens.js';
export { loadOrCreateDevSecret, readDevSecret, devSecretPath } from './secret.js';
