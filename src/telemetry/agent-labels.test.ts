import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { agentLabel, capAgentSeries, configureAgentLabels } from './agent-labels.js';
import { setZeroTelemetryLookup } from './zero-telemetry.js';
import { histogramQuantile } from './monitor-metrics.js';

describe('agent label cap', () => {
  afterEach(() => configureAgentLabels({ enabled: true, maxAgents: 200 }));
  const rows = [
    { tenant_id: 't', agent_id: 'a', value: 5 },
    { tenant_id: 't', agent_id: 'b', value: 50 },
    { tenant_id: 'u', agent_id: 'c', value: 7 },
    { tenant_id: 't', agent_id: 'd', value: 1 },
  ];

  it('gauges keep the largest agents and fold the rest per tenant (sum for counts, max for percentages)', () => {
    configureAgentLabels({ maxAgents: 2 });
    assert.deepEqual(capAgentSeries(rows, 'sum'), [
      { tenant_id: 't', agent_id: 'b', value: 50 },
      { tenant_id: 'u', agent_id: 'c', value: 7 },
      { tenant_id: 't', agent_id: '_other', value: 6 },
    ]);
    assert.deepEqual(capAgentSeries(rows, 'max').at(-1), { tenant_id: 't', agent_id: '_other', value: 5 });
    configureAgentLabels({ maxAgents: 10 });
    assert.equal(capAgentSeries(rows, 'sum').length, 4, 'under the cap nothing is folded');
  });

  it('off: one "_all" series per tenant', () => {
    configureAgentLabels({ enabled: false });
    assert.deepEqual(capAgentSeries(rows, 'sum'), [
      { tenant_id: 't', agent_id: '_all', value: 56 },
      { tenant_id: 'u', agent_id: '_all', value: 7 },
    ]);
    assert.equal(agentLabel('t', 'a'), '_all');
  });

  it('counters: the first agents counted keep their label, later ones are "_other"', () => {
    configureAgentLabels({ maxAgents: 2 });
    assert.deepEqual(['a', 'b', 'c', 'a', 'c'].map((a) => agentLabel('t', a)), ['a', 'b', '_other', 'a', '_other']);
  });

  it('a tenant in zero-telemetry mode: its agents have no series of their own, in counters or gauges', () => {
    const remove = setZeroTelemetryLookup((tenant) => tenant === 'u');
    try {
      assert.equal(agentLabel('u', 'c'), '_zero_telemetry');
      assert.equal(agentLabel('t', 'a'), 'a');
      assert.deepEqual(capAgentSeries(rows, 'sum').at(-1), { tenant_id: 'u', agent_id: '_zero_telemetry', value: 7 });
      assert.ok(!capAgentSeries(rows, 'sum').some((r) => r.agent_id === 'c'));
    } finally {
      remove();
    }
  });
});

describe('histogramQuantile (as PromQL histogram_quantile)', () => {
  const bounds = [0.1, 0.5, 1];
  it('interpolates inside the bucket that holds the rank', () => {
    const near = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} ≈ ${b}`);
    near(histogramQuantile(0.5, bounds, [0, 10, 10, 10]), 0.3); // all in (0.1, 0.5]: the middle
    near(histogramQuantile(0.99, bounds, [50, 100, 100, 100]), 0.1 + 0.4 * (49 / 50));
  });
  it('past the last bound it answers that bound; without observations NaN', () => {
    assert.equal(histogramQuantile(0.99, bounds, [0, 0, 0, 5]), 1);
    assert.ok(Number.isNaN(histogramQuantile(0.99, bounds, [0, 0, 0, 0])));
  });
});
