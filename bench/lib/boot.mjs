// Worker-thread entry: loads the TypeScript load generator through tsx (worker threads do not
// inherit tsx's loader on Node 20).
import { workerData } from 'node:worker_threads';
import { tsImport } from 'tsx/esm/api';

await tsImport(workerData.entry, import.meta.url);
