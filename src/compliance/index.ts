export { ErasureRequest, ErasureService, type ErasureOptions } from './erasure.js';
export { ERASURE_COVERAGE, SUBJECT_COLUMN_PATTERN } from './erasure-coverage.js';
export { pseudonymSub } from './erasure-steps.js';
export { ERASED_RESPONSE, SUBJECT_TYPES, SubjectRevocations, subjectHash, tokenSubjectHash, type SubjectType } from './subjects.js';
export { getRetention, RETENTION_KINDS, setRetention, sweepRetention, type RetentionKind, type RetentionOptions, type TenantSweep } from './retention.js';
export { startComplianceRuntime, type ComplianceRuntime } from './runtime.js';
