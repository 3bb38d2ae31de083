export { recordAudit, type AuditActor, type AuditEntry } from './record.js';
export { AuditEvent, AuditFilters, listAudit, type AuditScope } from './query.js';
export { AuditExport, AuditExports, AUDIT_EXPORT_FORMATS, exportBlobKey, type AuditExportFormat } from './exports.js';
export { chainHash, GENESIS_HASH, listChains, verifyAudit, verifyChain, type ChainBreak, type ChainReport } from './verify.js';
