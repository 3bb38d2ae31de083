import { logger } from '../telemetry/index.js';
import type { ErasureService } from './erasure.js';
import { sweepRetention, type RetentionOptions } from './retention.js';

/** How often unfinished erasure requests are looked for (after a crash, or a drain that timed out). */
const ERASURE_RESUME_MS = 10_000;

export interface ComplianceRuntime {
  stop(): Promise<void>;
}

/**
 * The in-process compliance loops of a fabric process: resuming erasures no process holds, and
 * the retention sweep every `sweepSeconds` (each tenant under an advisory lock, so with several
 * processes one sweeps a tenant at a time).
 */
export function startComplianceRuntime(o: RetentionOptions & { erasure: ErasureService; sweepSeconds: number }): ComplianceRuntime {
  let sweeping: Promise<unknown> = Promise.resolve();
  const resume = setInterval(() => void o.erasure.resume().catch((err: unknown) => logger().warn({ err }, 'resuming erasure requests failed')), ERASURE_RESUME_MS);
  const sweep = setInterval(() => {
    sweeping = sweepRetention(o)
      .then((r) => {
        const deleted = r.reduce((n, t) => n + Object.values(t.deleted).reduce((a, b) => a + b, 0), 0);
        if (deleted) logger().info({ deleted, tenants: r.length }, 'retention sweep deleted expired artifacts and logs');
      })
      .catch((err: unknown) => logger().warn({ err }, 'retention sweep failed'));
  }, o.sweepSeconds * 1000);
  resume.unref();
  sweep.unref();
  void o.erasure.resume().catch((err: unknown) => logger().warn({ err }, 'resuming erasure requests failed'));
  return {
    async stop() {
      clearInterval(resume);
      clearInterval(sweep);
      await sweeping;
      await o.erasure.idle();
    },
  };
}
