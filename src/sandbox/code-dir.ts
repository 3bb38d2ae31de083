import fs from 'node:fs/promises';
import path from 'node:path';

/** How long a verdict on a code dir is reused. */
const CACHE_MS = 30_000;
const cache = new Map<string, { until: number; problem: Promise<string | undefined> }>();

async function inspect(dir: string): Promise<string | undefined> {
  if (!path.isAbsolute(dir)) return `entrypoint.code_dir must be an absolute path on the worker's host, got "${dir}"`;
  const st = await fs.stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) return `entrypoint.code_dir ${dir} is not a directory on this worker's host`;
  if ((st.mode & 0o005) !== 0o005) return `entrypoint.code_dir ${dir} must be readable by other users (the sandbox runs as its own uid): chmod o+rx it`;
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    const s = await fs.stat(d);
    if ((s.mode & 0o001) === 0) return `the sandbox cannot reach entrypoint.code_dir ${dir}: ${d} is not searchable by other users (chmod o+x ${d}, or move the code)`;
    if (d === path.dirname(d)) return undefined;
  }
}

/**
 * Why a sandbox (its own unprivileged uid) could not read the agent's code dir, or undefined.
 * Checked before the session starts, so the agent gets a clear error instead of bwrap's.
 */
export function codeDirProblem(dir: string): Promise<string | undefined> {
  const hit = cache.get(dir);
  if (hit && hit.until > Date.now()) return hit.problem;
  const problem = inspect(dir);
  cache.set(dir, { until: Date.now() + CACHE_MS, problem });
  if (cache.size > 1000) cache.delete(cache.keys().next().value!);
  return problem;
}
