export { SandboxExecutor, type SandboxExecutorOptions } from './executor.js';
export { detectSandboxHost, missingFor, prepareSandboxRoot, type SandboxHost } from './host.js';
export { UidPool } from './uids.js';
export { listSessions, closeOrphanSessions, type SessionRecord } from './sessions.js';
export { startSandboxRuntime, type SandboxRuntime } from './setup.js';
export { reapStaleSandboxes } from './reaper.js';
