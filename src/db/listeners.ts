import { logger } from '../telemetry/index.js';

/** Wraps a NOTIFY listener so one that throws is logged and stays subscribed instead of crashing the process. */
export function safeListener(channel: string, fn: (payload: string) => void): (payload: string) => void {
  return (payload) => {
    try {
      fn(payload);
    } catch (err) {
      logger().error({ err, channel }, 'a NOTIFY listener threw; it stays subscribed');
    }
  };
}
