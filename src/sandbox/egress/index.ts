import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export { DEFAULT_EGRESS_PORTS, isPublicAddress, matchesAllowList, normalizeHost, parseAllowEntry, parseAllowList, type AllowEntry } from './allow.js';
export { EgressProxy, type EgressCheck, type EgressDecision, type EgressProxyOptions } from './proxy.js';

/** The files that run inside a sandbox (plain CommonJS, no dependencies). */
export const EGRESS_HELPER_FILES = ['relay.cjs', 'preload.cjs'] as const;

/**
 * The directory holding relay.cjs and preload.cjs: this module's own directory when they are
 * there (running from src/), else src/sandbox/egress of the package (tsc does not copy .cjs
 * files into dist/).
 */
export function egressHelpersDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [here, path.resolve(here, '../../../src/sandbox/egress')];
  for (const dir of candidates) if (EGRESS_HELPER_FILES.every((f) => fs.existsSync(path.join(dir, f)))) return dir;
  throw new Error(`agent-fabric: the sandbox egress helpers (${EGRESS_HELPER_FILES.join(', ')}) are not in ${candidates.join(' or ')}`);
}
