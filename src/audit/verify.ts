import { createHash } from 'node:crypto';
import { withTransaction, type Db, type Queryable } from '../db/index.js';

/** prev_hash of the first row of every chain. */
export const GENESIS_HASH = '0'.repeat(64);

/**
 * The row's canonical content, rendered by PostgreSQL exactly as the chain trigger renders it
 * (migrations/0014_audit_chain.sql, fabric_audit_content): jsonb text (sorted keys, fixed
 * separators) with created_at as UTC text to the microsecond. Inlined from core functions so
 * the verifier does not depend on a function of the schema that could have been replaced.
 */
const CONTENT = `jsonb_build_object(
    'seq', a.chain_seq, 'id', a.id, 'tenant_id', a.tenant_id, 'actor_sub', a.actor_sub, 'actor_role', a.actor_role,
    'action', a.action, 'target_type', a.target_type, 'target_id', a.target_id, 'before', a.before, 'after', a.after,
    'request_id', a.request_id, 'created_at', to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text`;

/** sha256(prev_hash || content), hex: the hash a row must carry. */
export function chainHash(prevHash: string, content: string): string {
  return createHash('sha256').update(prevHash + content, 'utf8').digest('hex');
}

/** Where a chain first breaks: the row (or the head) and why. */
export interface ChainBreak {
  /** audit_log.id of the first row that does not fit, or null when the rows fit but the head does not. */
  id: number | null;
  chain_seq: number | null;
  reason: string;
}

export interface ChainReport {
  /** The tenant id, or null for platform-level rows (tenant_id NULL). */
  tenant_id: string | null;
  rows: number;
  ok: boolean;
  /** Position and hash of the last row checked: keep it somewhere else to detect a rewrite of the whole chain later. */
  head: { seq: number; hash: string };
  broken?: ChainBreak;
}

interface Row {
  id: number;
  chain_seq: number | null;
  prev_hash: string | null;
  hash: string | null;
  content: string;
}

const PAGE = 2000;

/**
 * Checks one tenant's chain row by row in chain order: positions 1, 2, 3 … without gaps or
 * repeats, each prev_hash equal to the hash before it, each hash equal to sha256(prev_hash ||
 * content) recomputed here, and the head (audit_chain_heads) at the last row. Stops at the first
 * break, so the report names the row where tampering begins: an edited row fails its own hash,
 * a deleted row shows as a gap at the row after it, an inserted row as a repeated position or a
 * wrong prev_hash, a deleted tail as a head past the last row. Give it one snapshot (verifyAudit
 * does) when writers may be appending meanwhile.
 */
export async function verifyChain(q: Queryable, tenantId: string | null): Promise<ChainReport> {
  const chain = tenantId ?? '';
  let prev = GENESIS_HASH;
  let expected = 1;
  let rows = 0;
  const report = (broken?: ChainBreak): ChainReport => ({ tenant_id: tenantId, rows, ok: !broken, head: { seq: expected - 1, hash: prev }, ...(broken ? { broken } : {}) });
  let after: [number, number] = [-1, -1];
  for (;;) {
    const page = await q.query<Row>(
      `SELECT a.id, a.chain_seq, a.prev_hash, a.hash, ${CONTENT} AS content
         FROM audit_log a
        WHERE coalesce(a.tenant_id, '') = $1 AND (coalesce(a.chain_seq, 0), a.id) > ($2, $3)
        ORDER BY coalesce(a.chain_seq, 0), a.id
        LIMIT ${PAGE}`,
      [chain, after[0], after[1]],
    );
    for (const r of page.rows) {
      const at = { id: Number(r.id), chain_seq: r.chain_seq === null ? null : Number(r.chain_seq) };
      if (at.chain_seq === null || r.hash === null || r.prev_hash === null)
        return report({ ...at, reason: 'the row is not sealed (no position or hash): it was inserted with the chain trigger disabled' });
      if (at.chain_seq < expected) return report({ ...at, reason: `position ${at.chain_seq} appears twice: a row was inserted out of band` });
      if (at.chain_seq > expected)
        return report({ ...at, reason: `position ${expected}${at.chain_seq > expected + 1 ? `–${at.chain_seq - 1}` : ''} is missing before this row: a row was deleted` });
      if (r.prev_hash !== prev) return report({ ...at, reason: 'prev_hash is not the hash of the row before: a row before it was changed, removed or inserted' });
      if (chainHash(r.prev_hash, r.content) !== r.hash) return report({ ...at, reason: 'the row content does not match its hash: the row was edited' });
      prev = r.hash;
      expected++;
      rows++;
    }
    if (page.rows.length < PAGE) break;
    const last = page.rows[page.rows.length - 1]!;
    after = [Number(last.chain_seq ?? 0), Number(last.id)];
  }
  const head = await q.query<{ seq: number; hash: string }>(`SELECT seq, hash FROM audit_chain_heads WHERE chain = $1`, [chain]);
  const h = head.rows[0];
  if (!h) {
    if (rows > 0) return report({ id: null, chain_seq: null, reason: 'the chain has rows but no head in audit_chain_heads: the head was deleted' });
    return report();
  }
  if (Number(h.seq) !== expected - 1 || h.hash !== prev)
    return report({
      id: null,
      chain_seq: Number(h.seq),
      reason:
        Number(h.seq) > expected - 1
          ? `the head is at position ${h.seq} but the last row is at ${expected - 1}: rows at the end were deleted`
          : `the head (position ${h.seq}) does not match the last row (position ${expected - 1}): the head was changed or rows were appended out of band`,
    });
  return report();
}

/** The chains to verify: one tenant's, or every chain that has a head or rows ('' = platform). */
export async function listChains(q: Queryable): Promise<(string | null)[]> {
  const r = await q.query<{ chain: string }>(
    `SELECT chain FROM audit_chain_heads UNION SELECT DISTINCT coalesce(tenant_id, '') FROM audit_log ORDER BY 1`,
  );
  return r.rows.map((x) => (x.chain === '' ? null : x.chain));
}

/**
 * Verifies every chain (or one tenant's; null = the platform-level chain): one report per chain.
 * Each chain is read in one REPEATABLE READ, READ ONLY transaction, so rows appended while it is
 * checked (a live fabric) are not mistaken for a head that ran ahead of its rows.
 */
export async function verifyAudit(db: Db, opts: { tenantId?: string | null } = {}): Promise<ChainReport[]> {
  const chains = opts.tenantId !== undefined ? [opts.tenantId] : await listChains(db);
  const out: ChainReport[] = [];
  for (const c of chains)
    out.push(
      await withTransaction(
        db,
        async (tx) => {
          await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
          return verifyChain(tx, c);
        },
        { name: 'verify audit chain' },
      ),
    );
  return out;
}
