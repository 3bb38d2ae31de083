// Greps log files for the planted secrets (test/support/planted-secrets.ts). Prints where a
// secret was found — file, line numbers and which secret, never the value — and exits 1 when
// one was, or when no log line was read at all (the check must not pass vacuously).
// Usage: node --import tsx test/support/check-log-secrets.ts [--allow-empty] <log file>…
import fs from 'node:fs';
import { PLANTED_PATTERNS, PLANTED_VALUES } from './planted-secrets.js';

const args = process.argv.slice(2);
const allowEmpty = args.includes('--allow-empty');
const files = args.filter((a) => a !== '--allow-empty');
let lines = 0;
const leaks: string[] = [];
for (const file of files) {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const hits = new Map<string, number[]>();
  text.split('\n').forEach((line, i) => {
    if (!line) return;
    lines++;
    for (const [name, value] of Object.entries(PLANTED_VALUES)) if (line.includes(value)) hits.set(name, [...(hits.get(name) ?? []), i + 1]);
    for (const [name, re] of Object.entries(PLANTED_PATTERNS)) if (re.test(line)) hits.set(name, [...(hits.get(name) ?? []), i + 1]);
  });
  for (const [name, at] of hits) leaks.push(`${file}: ${name} on line${at.length > 1 ? 's' : ''} ${at.slice(0, 20).join(', ')}${at.length > 20 ? ` (+${at.length - 20} more)` : ''}`);
}
if (leaks.length) {
  console.log(`planted-secret check FAILED: secrets reached the logs\n  ${leaks.join('\n  ')}`);
  process.exit(1);
}
if (lines === 0 && !allowEmpty) {
  console.log(`planted-secret check FAILED: no log line was captured in ${files.join(', ')}, so nothing was checked`);
  process.exit(1);
}
console.log(lines === 0 ? 'planted-secret check: no log lines were written by these tests (nothing to check)' : `planted-secret check: ${lines} log lines, no planted secret found`);
