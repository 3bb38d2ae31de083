#!/usr/bin/env node
// The published entry point runs the compiled CLI (built by `npm install` via `prepare`).
import '../dist/cli/main.js';
