#!/usr/bin/env node
// Runs every *.test.ts under src/ and test/ with node:test through tsx.
// Usage: node scripts/run-tests.mjs [path-substring ...]
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function find(dir, out = []) {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) find(p, out);
    else if (p.endsWith('.test.ts')) out.push(p);
  }
  return out;
}
const filters = process.argv.slice(2);
const files = [...find('src'), ...find('test')].filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort();
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '3';
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', `--test-timeout=${process.env.BERTH_SOAK === '1' ? 3_600_000 : 300_000}`, ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
