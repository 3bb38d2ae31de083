export { createAgentQuota, AgentQuota, QuotaLimitsInput, OveragePolicy } from './quotas.js';
export { recordLedgerEntry, type LedgerEntry } from './ledger.js';
