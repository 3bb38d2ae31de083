import { logger, transactionsTotal } from '../telemetry/index.js';
import { coerceError } from '../errors/index.js';
import type { Db, Tx } from './types.js';

export interface TransactionOptions {
  /** What the transaction does, for the rollback log line (e.g. "provision agent"). */
  name?: string;
}

/**
 * Runs `fn` atomically: every statement on `tx` commits together or not at all (FR-07).
 * Every rollback is logged with the error and its stack (FR-09) and counted in
 * `agent_fabric_transactions_total{outcome="rollback"}`.
 */
export async function withTransaction<T>(db: Db, fn: (tx: Tx) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  try {
    const channels = new Set<string>();
    const result = await db.transaction((q) => fn({ ...q, notifyAfterCommit: (channel: string) => void channels.add(channel) } as Tx));
    transactionsTotal.inc({ outcome: 'commit' });
    for (const channel of channels) db.notifySoon(channel);
    return result;
  } catch (err) {
    transactionsTotal.inc({ outcome: 'rollback' });
    const error = coerceError(err);
    logger().warn(
      { err: error, transaction: options.name ?? 'unnamed', stack: error.stack },
      `ROLLBACK: transaction "${options.name ?? 'unnamed'}" rolled back: ${error.message}`,
    );
    throw err;
  }
}
