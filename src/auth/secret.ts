import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, createExclusive, ensurePrivateDir } from '../config/index.js';

/** Where the generated development secret is kept. */
export const devSecretPath = (dataDir: string) => path.join(dataDir, 'jwt-secret');

/** Reads the dev secret, refusing a short one and tightening loose permissions; undefined if absent. */
export function readDevSecret(dataDir: string): string | undefined {
  const file = devSecretPath(dataDir);
  let secret: string;
  try {
    secret = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  if (secret.length < 32) throw new ConfigError(`${file} holds a JWT secret shorter than 32 characters; delete it to have a new one generated, or set FABRIC_JWT_SECRET.`);
  if ((fs.statSync(file).mode & 0o077) !== 0) fs.chmodSync(file, 0o600);
  return secret;
}

/**
 * Returns the development JWT secret from the data dir, creating it (0600, atomically) on
 * first use, so tokens minted by `agent-fabric token` keep working across restarts.
 */
export function loadOrCreateDevSecret(dataDir: string): { secret: string; created: boolean } {
  const existing = readDevSecret(dataDir);
  if (existing) return { secret: existing, created: false };
  ensurePrivateDir(dataDir);
  const secret = randomBytes(48).toString('base64url');
  try {
    createExclusive(devSecretPath(dataDir), `${secret}\n`);
    return { secret, created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return { secret: readDevSecret(dataDir)!, created: false }; // another process created it first
  }
}
