import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../config/index.js';
import { EMBED_LATENCY_BUCKETS, type WindowCounts } from '../telemetry/index.js';
import { findBreaches, resolveRules } from './rules.js';
import type { TableSignals } from './signals.js';

const counts = (c: Partial<WindowCounts> = {}): WindowCounts => ({
  tx_commit: 0,
  tx_rollback: 0,
  http_total: 0,
  http_5xx: 0,
  task_total: 0,
  task_failed: 0,
  embed_buckets: EMBED_LATENCY_BUCKETS.map(() => 0).concat(0),
  ...c,
});
const noTables: TableSignals = { quotas: [], queues: [], deadLetters: [], activeAgents: [] };
const only = (name: string) => resolveRules().map((r) => (r.name === name ? r : { ...r, enabled: false }));

describe('alert rules', () => {
  it('the defaults are the thresholds of the monitoring table; FABRIC_ALERT_RULES overrides them', () => {
    const byName = Object.fromEntries(resolveRules().map((r) => [r.name, [r.threshold, r.severity, r.enabled]]));
    assert.deepEqual(byName, {
      quota_tokens_pct: [80, 'warning', true],
      queue_depth: [75, 'warning', true],
      tasks_dead_lettered: [0, 'critical', true],
      transactions_rollback_rate: [1, 'critical', true],
      files_storage_pct: [90, 'warning', true],
      memory_embed_latency_p99: [0.5, 'warning', true],
      error_rate_anomaly: [5, 'critical', true],
    });
    const config = loadConfig({ FABRIC_ALERT_RULES: '{"queue_depth": {"threshold": 50, "severity": "critical"}, "files_storage_pct": {"enabled": false}}' });
    const rules = resolveRules(config.alerts.rules);
    assert.deepEqual(rules.find((r) => r.name === 'queue_depth')!.threshold, 50);
    assert.equal(rules.find((r) => r.name === 'queue_depth')!.severity, 'critical');
    assert.equal(rules.find((r) => r.name === 'files_storage_pct')!.enabled, false);
  });

  it('a bad FABRIC_ALERT_RULES stops the start with a message naming it', () => {
    for (const [raw, message] of [
      ['{"queue_dept": {"threshold": 5}}', /FABRIC_ALERT_RULES: .*queue_dept.*rules: quota_tokens_pct/s],
      ['{"queue_depth": {"treshold": 5}}', /FABRIC_ALERT_RULES: .*treshold/s],
      ['{"queue_depth": {"threshold": -1}}', /FABRIC_ALERT_RULES: queue_depth.threshold/],
      ['not json', /FABRIC_ALERT_RULES: not JSON/],
    ] as const)
      assert.throws(() => loadConfig({ FABRIC_ALERT_RULES: raw }), (err: Error) => err instanceof ConfigError && message.test(err.message), raw);
  });

  it('per-agent and per-tenant rules breach strictly above their threshold', () => {
    const tables: TableSignals = {
      quotas: [
        { tenant_id: 't', agent_id: 'a1', tokens_pct: 80, storage_pct: 90 },
        { tenant_id: 't', agent_id: 'a2', tokens_pct: 80.5, storage_pct: 91 },
      ],
      queues: [
        { tenant_id: 't', agent_id: 'a1', depth: 75, running: 0 },
        { tenant_id: 't', agent_id: 'a2', depth: 76, running: 0 },
      ],
      deadLetters: [
        { tenant_id: 't', dead_lettered: 0 },
        { tenant_id: 'u', dead_lettered: 2 },
      ],
      activeAgents: [],
    };
    const breaches = findBreaches(resolveRules(), tables, { window: counts(), baseline: counts() });
    assert.deepEqual(
      breaches.map((b) => [b.rule, b.tenantId, b.subject, b.value]),
      [
        ['quota_tokens_pct', 't', 'a2', 80.5],
        ['queue_depth', 't', 'a2', 76],
        ['tasks_dead_lettered', 'u', 'u', 2],
        ['files_storage_pct', 't', 'a2', 91],
      ],
    );
  });

  it('error_rate_anomaly: the window rate must pass max(threshold, factor × baseline rate) with enough events', () => {
    const rule = only('error_rate_anomaly');
    const judge = (window: Partial<WindowCounts>, baseline: Partial<WindowCounts>) => findBreaches(rule, noTables, { window: counts(window), baseline: counts(baseline) });
    // 10 % errors after a clean hour: an anomaly (threshold 5 %)
    assert.deepEqual(judge({ http_total: 90, http_5xx: 6, task_total: 10, task_failed: 4 }, { http_total: 1000 }).map((b) => [b.value, b.threshold]), [[10, 5]]);
    // 10 % errors when the last hour ran at 4 %: 10 < 3 × 4 = 12, not an anomaly
    assert.equal(judge({ http_total: 100, http_5xx: 10 }, { http_total: 1000, http_5xx: 40 }).length, 0);
    // 13 % against a 4 % baseline: above 12 %
    assert.deepEqual(judge({ http_total: 100, http_5xx: 13 }, { http_total: 1000, http_5xx: 40 }).map((b) => Math.round(b.threshold)), [12]);
    // too few events to judge (default min_events 50)
    assert.equal(judge({ http_total: 10, http_5xx: 10 }, {}).length, 0);
  });

  it('rollback rate and embed latency p99 are judged over the fleet window, past min_events', () => {
    const rollback = only('transactions_rollback_rate');
    assert.deepEqual(findBreaches(rollback, noTables, { window: counts({ tx_commit: 197, tx_rollback: 3 }), baseline: counts() }).map((b) => [b.subject, b.tenantId, b.value]), [['fleet', null, 1.5]]);
    assert.equal(findBreaches(rollback, noTables, { window: counts({ tx_commit: 199, tx_rollback: 1 }), baseline: counts() }).length, 0, '0.5 % is fine');
    assert.equal(findBreaches(rollback, noTables, { window: counts({ tx_commit: 10, tx_rollback: 5 }), baseline: counts() }).length, 0, 'fewer than 100 transactions');

    const embed = only('memory_embed_latency_p99');
    const cumulative = (le: number, n: number) => EMBED_LATENCY_BUCKETS.map((b) => (b >= le ? n : 0)).concat(n);
    const p99 = (buckets: number[]) => findBreaches(embed, noTables, { window: counts({ embed_buckets: buckets }), baseline: counts() });
    assert.equal(p99(cumulative(0.1, 100)).length, 0, 'all within 100 ms');
    const slow = EMBED_LATENCY_BUCKETS.map((b) => (b >= 0.1 ? 90 : 0)).map((v, i) => (EMBED_LATENCY_BUCKETS[i]! >= 1 ? 100 : v)).concat(100);
    const [b] = p99(slow);
    assert.ok(b && b.value > 0.75 && b.value <= 1, `p99 ${b?.value} in the 0.75–1 s bucket`);
  });
});
