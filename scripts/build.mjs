#!/usr/bin/env node
// Compiles src/ to dist/ and copies the files tsc does not emit: the sandbox helpers (plain
// CommonJS that node runs inside sandboxes).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
for (const rel of ['sandbox/egress']) {
  for (const f of fs.readdirSync(path.join(root, 'src', rel)).filter((n) => n.endsWith('.cjs'))) {
    fs.copyFileSync(path.join(root, 'src', rel, f), path.join(root, 'dist', rel, f));
  }
}
