import type { Db } from '../db/index.js';
import { logger } from '../telemetry/index.js';
import { checkCaller, readCaller, type Caller, type CallerRow, type TokenCaller } from './caller.js';

/** Announced by the tables themselves (migration 0021) when a session, task or agent stops being callable: `task:<id>` or `agent:<id>`. */
export const CALLERS_CHANNEL = 'fabric_gateway_callers';

interface Entry {
  row: CallerRow;
  until: number;
  task: string;
  agent: string;
}

/**
 * The callers' checked session/task/agent rows, kept in memory so a model call reads nothing
 * from the database before its lease admits it. Only callable rows are kept (session and task
 * running, not being cancelled, the task's submit-time reservation already handed back), and
 * each one is dropped:
 * - when the database announces a change to its task, session or agent (triggers of migration
 *   0021 on every writer, NOTIFY delivered at commit), so a stopped task or ended session is
 *   refused as soon as this process hears of it;
 * - all of them when the LISTEN connection drops; nothing is kept until it is back;
 * - at the latest `ttlMs` after it was read (a last bound, for a notice lost some other way).
 * A read that overlaps any announcement is not kept (it may predate the change). Until LISTEN
 * is in place — or with `ttlMs` 0 — every call reads.
 */
export class CallerCache {
  private readonly entries = new Map<string, Entry>();
  private readonly byTask = new Map<string, Set<string>>();
  private readonly byAgent = new Map<string, Set<string>>();
  private generation = 0;
  private listening = false;
  private closed = false;
  private unlisten: Promise<() => Promise<void>> | undefined;

  constructor(
    private readonly db: Db,
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
  ) {}

  /** Starts listening (idempotent); nothing is kept before LISTEN is active. */
  start(): void {
    if (this.ttlMs <= 0) return;
    this.unlisten ??= this.db.listen(CALLERS_CHANNEL, (payload) => this.changed(payload), (live) => this.live(live)).then(
      (stop) => {
        this.listening = !this.closed;
        return stop;
      },
      (err: unknown) => {
        logger().warn({ err }, `gateway: LISTEN ${CALLERS_CHANNEL} failed; every model call reads its session and task`);
        return async () => {};
      },
    );
  }

  /** The caller, checked as loadCaller checks it (throws the same refusals), from memory when it is there. */
  async load(t: TokenCaller): Promise<Caller & { holdsOwn: boolean }> {
    const key = keyOf(t);
    const hit = this.entries.get(key);
    if (hit) {
      if (hit.until > Date.now()) return { ...checkCaller(t, hit.row), holdsOwn: false };
      this.drop(key);
    }
    const generation = this.generation;
    const row = await readCaller(this.db, t, false);
    const caller = checkCaller(t, row);
    const holdsOwn = row!.holds_own === true;
    if (!holdsOwn && this.listening && generation === this.generation) this.keep(key, t, row!);
    return { ...caller, holdsOwn };
  }

  /** How many callers are in memory (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The LISTEN connection dropped (false) or is back (true): notices were or may be missed, so
   * nothing kept is trusted any more, and nothing is kept until notices flow again.
   */
  live(live: boolean): void {
    this.changed('');
    this.listening = live && !this.closed && this.unlisten !== undefined;
  }

  /** A notice: forget what it names (anything else, e.g. an empty payload: forget everything). */
  changed(payload: string): void {
    this.generation++;
    const [kind, id] = payload.split(':', 2) as [string, string | undefined];
    const keys = id === undefined ? undefined : kind === 'task' ? this.byTask.get(id) : kind === 'agent' ? this.byAgent.get(id) : undefined;
    if (keys) for (const key of [...keys]) this.drop(key);
    else if (kind !== 'task' && kind !== 'agent') this.clear();
  }

  private keep(key: string, t: TokenCaller, row: CallerRow): void {
    if (this.entries.size >= this.maxEntries) this.clear();
    const entry: Entry = { row, until: Date.now() + this.ttlMs, task: row.task_id.toLowerCase(), agent: t.agentId.toLowerCase() };
    this.entries.set(key, entry);
    index(this.byTask, entry.task, key);
    index(this.byAgent, entry.agent, key);
  }

  private drop(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    unindex(this.byTask, e.task, key);
    unindex(this.byAgent, e.agent, key);
  }

  private clear(): void {
    this.entries.clear();
    this.byTask.clear();
    this.byAgent.clear();
  }

  async close(): Promise<void> {
    const stop = this.unlisten;
    this.unlisten = undefined;
    this.closed = true;
    this.listening = false;
    this.clear();
    if (stop) await (await stop)().catch(() => {});
  }
}

/** tenant/agent/s/<session> or tenant/agent/t/<task>: ids lowercased (UUIDs), the tenant id as it is (text). */
const keyOf = (t: TokenCaller) => `${t.tenantId}/${t.agentId.toLowerCase()}/${t.sessionId ? `s/${t.sessionId.toLowerCase()}` : `t/${String(t.taskId).toLowerCase()}`}`;

function index(m: Map<string, Set<string>>, id: string, key: string): void {
  let keys = m.get(id);
  if (!keys) m.set(id, (keys = new Set()));
  keys.add(key);
}

function unindex(m: Map<string, Set<string>>, id: string, key: string): void {
  const keys = m.get(id);
  keys?.delete(key);
  if (keys?.size === 0) m.delete(id);
}
