export { SemanticMemoryService, type SemanticMemoryOptions, type SearchRequest, type SearchResult } from './service.js';
export { ExactVectorIndex, type Hit } from './exact.js';
export type { SemanticMemory } from './store.js';
