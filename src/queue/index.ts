export * from './schemas.js';
export { AgentScheduler } from './scheduler.js';
export { cancelAgentTasks, requestCancelRunning } from './control.js';
export { DEFAULT_QUEUE_OPTIONS, READY_CHANNEL, retryDelaySeconds, type QueueOptions, type SubmitHook } from './options.js';
export { claimTasks, renewLeases, type ClaimedTask } from './claim.js';
export { finishAttempt, finishCompletedBatch, releaseAttempt, recoverExpiredLeases, type AttemptOutcome, type FinishResult } from './finish.js';
export type { Moved } from './transitions.js';
export { getTask, getAttempts, listTasks, queueStats, type ListTasksOptions, type TaskAttemptView } from './queries.js';
export { readQueueCounts, readDeadLetterCounts, type QueueCounts } from './metrics.js';
