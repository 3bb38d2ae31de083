import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadMigrations } from './migrate.js';

function dirWith(files: string[]): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-migrations-'));
  for (const f of files) fs.writeFileSync(path.join(dir, f), 'SELECT 1;');
  return dir;
}

describe('loadMigrations', () => {
  it('keeps version order whatever the directory order', () => {
    const dir = dirWith(['0003_c.sql', '0001_a.sql', '0002_b.sql']);
    assert.deepEqual(loadMigrations(dir).map((m) => m.version), [1, 2, 3]);
    fs.rmSync(dir, { recursive: true });
  });

  it('refuses a gap: a migration file is missing', () => {
    const dir = dirWith(['0001_a.sql', '0003_c.sql']);
    assert.throws(() => loadMigrations(dir), /without gaps; found 3 at position 2/);
    fs.rmSync(dir, { recursive: true });
  });

  it('refuses a number used twice', () => {
    const dir = dirWith(['0001_a.sql', '0002_b.sql', '0002_c.sql']);
    assert.throws(() => loadMigrations(dir), /two migrations are numbered 0002/);
    fs.rmSync(dir, { recursive: true });
  });
});
