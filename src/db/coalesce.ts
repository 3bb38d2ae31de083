import { logger } from '../telemetry/index.js';

/**
 * Coalesced notices: per channel, one send at a time; calls that arrive meanwhile cause
 * exactly one more send after the current one (so no change goes unannounced).
 */
export function coalescedNotifier(send: (channel: string) => Promise<void>, isClosed: () => boolean): (channel: string) => void {
  const state = new Map<string, 'pending' | 'again'>();
  const run = (channel: string) => {
    setImmediate(() => {
      if (isClosed()) return void state.delete(channel);
      send(channel)
        .catch((err: unknown) => logger().warn({ err, channel }, 'NOTIFY failed; listeners fall back to polling'))
        .finally(() => {
          if (state.get(channel) === 'again') {
            state.set(channel, 'pending');
            run(channel);
          } else state.delete(channel);
        });
    });
  };
  return (channel) => {
    const s = state.get(channel);
    if (s) return void state.set(channel, 'again');
    state.set(channel, 'pending');
    run(channel);
  };
}
