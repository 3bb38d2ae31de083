export { Worker, type WorkerOptions } from './worker.js';
export { AttemptError, InProcessExecutor, PermanentError, type Executor, type ExecutionContext, type TaskHandler, type InProcessExecutorOptions } from './executor.js';
