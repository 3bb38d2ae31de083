import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from './index.js';

describe('configuration', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({});
    assert.equal(c.port, 8787);
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.dataDir, path.resolve('.fabric'));
    assert.equal(c.databaseUrl, undefined);
    assert.equal(c.idempotencyTtlSeconds, 86_400);
    assert.deepEqual(c.quotaDefaults, { monthlyTokenLimit: 1_000_000, monthlyCostLimitUsd: 100, storageLimitBytes: 5 * 1024 ** 3, overagePolicy: 'block', alertThresholdPct: 80 });
  });

  it('reads the environment, and flags win over it', () => {
    const c = loadConfig({ PORT: '9000', FABRIC_DATA_DIR: '/tmp/x', DATABASE_URL: 'postgres://u@h/db' }, { port: 9100 });
    assert.deepEqual([c.port, c.dataDir, c.databaseUrl], [9100, '/tmp/x', 'postgres://u@h/db']);
  });

  it('fails fast naming every bad variable', () => {
    assert.throws(
      () => loadConfig({ PORT: 'eighty', FABRIC_JWT_SECRET: 'short', DATABASE_URL: 'mysql://x' }),
      (err: unknown) => err instanceof ConfigError && /PORT/.test(err.message) && /FABRIC_JWT_SECRET/.test(err.message) && /DATABASE_URL/.test(err.message),
    );
  });
});
