import { anyGlob, globToRegExp } from './glob.js';
import type { Approvers, Conditions, Effect, PolicyRule, ScopeType } from './schemas.js';

/** What the agent a check is about looks like to conditions (from its AgentConfig). */
export interface AgentAttrs {
  id: string;
  name: string;
  workspace_id: string;
  model: string;
  status: string;
  isolation_level: string;
  owner_user_id: string | null;
  tools: readonly string[];
  /** Policies it lists in its config (`policies`), by id or name. */
  policies: readonly string[];
}

/** One question: may `agent` (or a caller in `role`) do `action` on `resource`? */
export interface CheckInput {
  action: string;
  /** Normalized (normalizeResource). */
  resource: string;
  context: Readonly<Record<string, unknown>>;
  agent: AgentAttrs | undefined;
  role: string;
  now: Date;
}

/** A policy as stored, the part evaluation needs. */
export interface PolicyRecord {
  id: string;
  name: string;
  scope_type: ScopeType;
  scope_id: string | null;
  priority: number;
  version: number;
  enabled: boolean;
  rules: readonly PolicyRule[];
}

export interface CompiledRule {
  policyId: string;
  policyName: string;
  policyVersion: number;
  index: number;
  rule: PolicyRule;
  effect: Effect;
  priority: number;
  action: (action: string) => boolean;
  when: (input: CheckInput) => boolean;
}

export interface CompiledPolicy {
  record: PolicyRecord;
  rules: CompiledRule[];
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Weekday and minutes since midnight of `now` in time zone `tz`. */
function localTime(now: Date, tz: string): { day: string; minutes: number } {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(tz, f);
  }
  let day = '';
  let h = 0;
  let m = 0;
  for (const p of f.formatToParts(now)) {
    if (p.type === 'weekday') day = p.value.toLowerCase().slice(0, 3);
    else if (p.type === 'hour') h = Number(p.value);
    else if (p.type === 'minute') m = Number(p.value);
  }
  return { day, minutes: h * 60 + m };
}

const toMinutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3));

/** Checks that a time zone is one Intl knows (an unknown one would throw at evaluation). */
export function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

type Pred = (input: CheckInput) => boolean;

function timePred(t: NonNullable<Conditions['time']>): Pred {
  const tz = t.tz ?? 'UTC';
  const days = t.days ? new Set<string>(t.days) : undefined;
  const from = t.from === undefined ? undefined : toMinutes(t.from);
  const to = t.to === undefined ? undefined : toMinutes(t.to);
  return (input) => {
    const { day, minutes } = localTime(input.now, tz);
    if (days && !days.has(day)) return false;
    if (from !== undefined && to !== undefined) return from <= to ? minutes >= from && minutes < to : minutes >= from || minutes < to;
    if (from !== undefined) return minutes >= from;
    if (to !== undefined) return minutes < to;
    return true;
  };
}

function valuePred(expected: unknown): (v: unknown) => boolean {
  const list = Array.isArray(expected) ? expected : [expected];
  const strings = list.filter((x): x is string => typeof x === 'string');
  const match = strings.length ? anyGlob(strings) : () => false;
  const others = list.filter((x) => typeof x !== 'string');
  return (v) => (typeof v === 'string' ? match(v) : others.some((o) => o === v) || (v !== undefined && v !== null && typeof v !== 'object' && match(String(v))));
}

function conditionPreds(c: Conditions): Pred[] {
  const preds: Pred[] = [];
  if (c.resource !== undefined) {
    const m = anyGlob(c.resource);
    preds.push((i) => m(i.resource));
  }
  if (c.resource_not !== undefined) {
    const m = anyGlob(c.resource_not);
    preds.push((i) => !m(i.resource));
  }
  if (c.agent) {
    for (const [key, globs] of Object.entries(c.agent)) {
      if (globs === undefined) continue;
      const m = anyGlob(globs);
      if (key === 'tool') preds.push((i) => !!i.agent && i.agent.tools.some(m));
      else preds.push((i) => !!i.agent && m(String(i.agent[key as keyof AgentAttrs] ?? '')));
    }
  }
  if (c.role !== undefined) {
    const roles = new Set(typeof c.role === 'string' ? [c.role] : c.role);
    preds.push((i) => roles.has(i.role));
  }
  if (c.context) {
    for (const [key, expected] of Object.entries(c.context)) {
      const m = valuePred(expected);
      preds.push((i) => m(i.context[key]));
    }
  }
  if (c.amount) {
    const { gt, gte, lt, lte } = c.amount;
    preds.push((i) => {
      const a = i.context.amount;
      if (typeof a !== 'number' || !Number.isFinite(a)) return false;
      return (gt === undefined || a > gt) && (gte === undefined || a >= gte) && (lt === undefined || a < lt) && (lte === undefined || a <= lte);
    });
  }
  if (c.time) preds.push(timePred(c.time));
  return preds;
}

/** Compiles a policy's rules once: globs to regular expressions, conditions to predicates. */
export function compilePolicy(record: PolicyRecord): CompiledPolicy {
  const rules = record.rules.map((rule, index): CompiledRule => {
    const action = /[*?]/.test(rule.action_pattern) ? ((re: RegExp) => (a: string) => re.test(a))(globToRegExp(rule.action_pattern)) : (a: string) => a === rule.action_pattern;
    const preds = conditionPreds(rule.conditions ?? {});
    return {
      policyId: record.id,
      policyName: record.name,
      policyVersion: record.version,
      index,
      rule,
      effect: rule.effect,
      priority: rule.priority ?? record.priority,
      action,
      when: preds.length === 0 ? () => true : (input) => preds.every((p) => p(input)),
    };
  });
  return { record, rules };
}

/** Who decides a require_approval rule's requests: its approvers, else the tenant's admins. */
export function approversOf(rule: PolicyRule): Approvers {
  const a = rule.approvers;
  return a && (a.users.length || a.roles.length) ? a : { users: [], roles: ['admin'] };
}
