#!/usr/bin/env node
// Runs the whole suite once per database engine: PGlite always, PostgreSQL when a server
// is reachable. In CI (CI=true) or with FABRIC_REQUIRE_POSTGRES=1, an unreachable
// PostgreSQL fails the run instead of being reported as not run.
// Every process of a run logs at debug (FABRIC_LOG_LEVEL overrides) into one file per engine
// (FABRIC_LOG_FILE); after the run the file is grepped for the secrets the tests plant
// (test/support/planted-secrets.ts) and the run fails if one is found — or, on a full run,
// if nothing was logged at all, so the check cannot pass vacuously.
// Usage: npm test [-- <test files…>]   env: FABRIC_TEST_ENGINES=pglite,postgres
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = path.join(root, '.test-tmp');
fs.mkdirSync(tmp, { recursive: true });
const pgUrl = process.env.FABRIC_TEST_PG_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const requirePostgres = process.env.CI === 'true' || process.env.FABRIC_REQUIRE_POSTGRES === '1';
const engines = (process.env.FABRIC_TEST_ENGINES ?? 'pglite,postgres').split(',').map((s) => s.trim()).filter(Boolean);
// One template database per run, so two runs against one server do not clobber each other.
const pgTemplate = `fabric_test_template_${process.pid}`;

function findTests(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : findTests(p);
    return e.name.endsWith('.test.ts') ? [path.relative(root, p)] : [];
  });
}

const targeted = process.argv.slice(2).length > 0;
const files = targeted ? process.argv.slice(2) : [...findTests(path.join(root, 'src')), ...findTests(path.join(root, 'test'))].sort();
const logLevel = process.env.FABRIC_LOG_LEVEL ?? 'debug';

function run(cmd, args, env, capture) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', capture ? 'pipe' : 'inherit', 'inherit'] });
    let out = '';
    child.stdout?.on('data', (d) => {
      out += d;
      process.stdout.write(d);
    });
    child.on('close', (code) => resolve({ code, out }));
  });
}

async function postgresReachable() {
  const client = new pg.Client({ connectionString: pgUrl, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: err.message || String(err) };
  } finally {
    await client.end().catch(() => {});
  }
}

const results = [];
let failed = false;
for (const engine of engines) {
  const env = {
    FABRIC_TEST_ENGINE: engine,
    FABRIC_TEST_PG_URL: pgUrl,
    FABRIC_TEST_PGLITE_TEMPLATE: path.join(tmp, `pglite-template-${process.pid}.tar`),
    FABRIC_TEST_PG_TEMPLATE: pgTemplate,
    FABRIC_LOG_LEVEL: logLevel,
    FABRIC_LOG_FILE: path.join(tmp, `logs-${engine}-${process.pid}.jsonl`),
  };
  fs.rmSync(env.FABRIC_LOG_FILE, { force: true });
  if (engine === 'postgres') {
    const reach = await postgresReachable();
    if (!reach.ok) {
      const msg = `PostgreSQL suite NOT RUN: no server at ${pgUrl.replace(/:[^:@/]*@/, ':***@')} (${reach.reason}). Set FABRIC_TEST_PG_URL or DATABASE_URL to run it.`;
      console.log(`\n${'!'.repeat(8)} ${msg}\n`);
      results.push({ engine, notRun: msg });
      if (requirePostgres) failed = true;
      continue;
    }
  }
  console.log(`\n=== ${engine}: preparing the template database ===`);
  const prep = await run(process.execPath, ['--import', 'tsx', 'test/support/build-template.ts'], env, false);
  if (prep.code !== 0) {
    console.log(`${engine}: building the template database failed`);
    results.push({ engine, pass: 0, fail: 1, skipped: 0 });
    failed = true;
    continue;
  }
  console.log(`=== ${engine}: running ${files.length} test files ===`);
  const { code, out } = await run(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-reporter=spec', ...files], env, true);
  const count = (label) => Number(new RegExp(`^ℹ ${label} (\\d+)$`, 'm').exec(out)?.[1] ?? 0);
  // node counts a skipped describe() as one skipped test whatever it holds; count its tests.
  const skippedSuites = [...out.matchAll(/^﹣ .*# .*$/gm)].length;
  const r = { engine, pass: count('pass'), fail: count('fail'), skipped: count('skipped') + count('todo'), skippedSuites };
  if (code !== 0 && r.fail === 0) r.fail = 1;
  if (code !== 0) failed = true;
  r.secrets = await checkLogSecrets(env);
  if (!r.secrets.ok) failed = true;
  results.push(r);
  if (engine === 'postgres') await dropTemplate();
  else fs.rmSync(env.FABRIC_TEST_PGLITE_TEMPLATE, { force: true });
}

/** Greps the run's log file for planted secrets (test/support/check-log-secrets.ts); keeps the file when the check fails. */
async function checkLogSecrets(env) {
  if (logLevel === 'silent') return { ok: true, note: 'planted-secret check NOT RUN: FABRIC_LOG_LEVEL=silent, nothing was logged' };
  const args = ['--import', 'tsx', 'test/support/check-log-secrets.ts', ...(targeted ? ['--allow-empty'] : []), env.FABRIC_LOG_FILE];
  const { code, out } = await run(process.execPath, args, {}, true);
  if (code === 0) fs.rmSync(env.FABRIC_LOG_FILE, { force: true });
  return { ok: code === 0, note: out.trim().split('\n')[0] + (code === 0 ? '' : ` (log kept: ${path.relative(root, env.FABRIC_LOG_FILE)})`) };
}

async function dropTemplate() {
  const client = new pg.Client({ connectionString: pgUrl });
  try {
    await client.connect();
    await client.query(`DROP DATABASE IF EXISTS ${pgTemplate} WITH (FORCE)`);
  } catch {
    /* best effort */
  } finally {
    await client.end().catch(() => {});
  }
}

for (const e of ['pglite', 'postgres']) if (!engines.includes(e)) results.push({ engine: e, notRun: `${e} suite NOT RUN: left out by FABRIC_TEST_ENGINES=${process.env.FABRIC_TEST_ENGINES}.` });

console.log('\n=== summary ===');
let pass = 0, fail = 0, skipped = 0;
for (const r of results) {
  if (r.notRun) console.log(`${r.engine}: ${r.notRun}`);
  else console.log(`${r.engine}: ${r.pass} passed, ${r.fail} failed, ${r.skipped} skipped tests${r.skippedSuites ? `, ${r.skippedSuites} skipped suite(s) (each says why)` : ''}${r.secrets ? `; ${r.secrets.note}` : ''}`);
  pass += r.pass ?? 0;
  fail += (r.fail ?? 0) + (r.secrets && !r.secrets.ok ? 1 : 0);
  skipped += (r.skipped ?? 0) + (r.skippedSuites ?? 0);
}
if (results.some((r) => r.notRun) && requirePostgres) {
  console.log('PostgreSQL is required here (CI=true or FABRIC_REQUIRE_POSTGRES=1): failing the run.');
  fail += 1;
}
console.log(`${pass} passed, ${fail} failed, ${skipped} skipped`);
process.exit(failed || fail > 0 ? 1 : 0);
