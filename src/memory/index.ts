export { deleteMemory, getMemory, listMemory, putMemory, sweepExpiredMemory, MAX_KEY_BYTES, type MemoryEntry, type MemoryKeyInfo } from './kv.js';
