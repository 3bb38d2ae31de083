import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** Where the generated development secret is kept. */
export const devSecretPath = (dataDir: string) => path.join(dataDir, 'jwt-secret');

/**
 * Returns the development JWT secret from the data dir, creating it (0600) on first use,
 * so tokens minted by `agent-fabric token` keep working across restarts.
 */
export function loadOrCreateDevSecret(dataDir: string): { secret: string; created: boolean } {
  const file = devSecretPath(dataDir);
  try {
    return { secret: fs.readFileSync(file, 'utf8').trim(), created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  fs.mkdirSync(dataDir, { recursive: true });
  const secret = randomBytes(48).toString('base64url');
  try {
    fs.writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
    return { secret, created: true };
  } catch (err) {
    // another process created it first: use theirs
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { secret: fs.readFileSync(file, 'utf8').trim(), created: false };
    throw err;
  }
}

/** Reads the development secret if one exists (for `agent-fabric token`). */
export function readDevSecret(dataDir: string): string | undefined {
  try {
    return fs.readFileSync(devSecretPath(dataDir), 'utf8').trim();
  } catch {
    return undefined;
  }
}
