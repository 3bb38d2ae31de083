import { AsyncLocalStorage } from 'node:async_hooks';

/** Correlation ids carried through async work and stamped on every log line. */
export interface LogContext {
  request_id?: string;
  tenant_id?: string;
  agent_id?: string;
  task_id?: string;
  trace_id?: string;
}

const storage = new AsyncLocalStorage<LogContext>();

/** Runs `fn` with `ctx` merged over the current correlation context. */
export function runWithContext<T>(ctx: LogContext, fn: () => T): T {
  return storage.run({ ...storage.getStore(), ...ctx }, fn);
}

/** Adds ids to the current context in place (e.g. the tenant once the token is verified). */
export function addToContext(ctx: LogContext): void {
  const store = storage.getStore();
  if (store) Object.assign(store, ctx);
}

/** The correlation ids in effect here, or an empty object. */
export function currentContext(): LogContext {
  return storage.getStore() ?? {};
}
