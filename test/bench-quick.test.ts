/**
 * Runs the benchmark harness once in quick mode and checks that it completed and printed every scenario
 * row with numbers for both servers, and every machine limit. No timing assertions.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

/** Scenario rows the report must contain (prefixes of the first cell). */
const EXPECTED = [
  'push monolithic',
  'push chunked',
  'pull ',
  'concurrent push',
  'calibration: GET /v2/',
  'manifest GET by tag',
  'manifest GET by digest',
  'manifest HEAD by tag',
  'manifest HEAD by digest',
  'blob 4 KiB GET',
  'catalog of',
  'tags list of',
  'peak RSS',
];

const EXPECTED_LIMITS = ['sha256', 'disk sequential write', 'disk sequential read', 'loopback HTTP', 'bare Node push', 'nginx: manifest', 'nginx: 4 KiB'];

/**
 * Stopped well inside the runner's 300 s per file, so that a run that hangs fails with its own progress
 * lines and the requests it was waiting for (the harness prints them when stopped), not a bare timeout.
 * Alone it takes about 50 s; beside the heaviest test files, up to 2-3 times that.
 */
const DEADLINE_MS = 240_000;

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((ok) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/run.ts'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      p.kill('SIGTERM');
      setTimeout(() => p.kill('SIGKILL'), 15_000).unref();
    }, DEADLINE_MS);
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.once('close', (code) => {
      clearTimeout(timer);
      ok({ code, stdout, stderr, timedOut });
    });
  });
}

function cells(line: string): string[] {
  return line
    .replace(/^\s*\|/, '')
    .replace(/\|\s*$/, '')
    .split(/(?<!\\)\|/)
    .map((c) => c.trim());
}

function isNumber(cell: string | undefined): boolean {
  return cell !== undefined && /^-?[\d,]+(\.\d+)?$/.test(cell) && Number.isFinite(Number(cell.replace(/,/g, '')));
}

test('npm run bench -- --quick completes with a row of numbers for every scenario and both servers', { timeout: DEADLINE_MS + 30_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-test-'));
  try {
    const out = join(dir, 'quick.md');
    // tsx runtime: never rebuild dist/ underneath other tests that run the compiled CLI.
    const r = await run(['--quick', '--out', out, '--berth-runtime', 'tsx', '--storage-dir', dir, '--no-install']);
    assert.ok(!r.timedOut, `harness still running after ${DEADLINE_MS / 1000} s, stopped:\n${r.stderr.slice(-6000)}`);
    assert.equal(r.code, 0, `harness failed (exit ${r.code}):\n${r.stderr.slice(-4000)}\n${r.stdout.slice(-4000)}`);

    const section = r.stdout.split('## Berth vs distribution')[1]?.split('\n## ')[0] ?? '';
    const rows = section
      .split('\n')
      .filter((l) => l.startsWith('|') && !l.startsWith('|---') && !l.startsWith('| scenario'))
      .map(cells);
    for (const name of EXPECTED) {
      const row = rows.find((c) => c[0]!.replace(/^_|_$/g, '').startsWith(name));
      assert.ok(row, `no row for "${name}" in:\n${section}`);
    }
    for (const c of rows) {
      assert.ok(isNumber(c[2]), `distribution value of "${c[0]}" is not a number: ${c[2]}`);
      assert.ok(isNumber(c[3]), `Berth value of "${c[0]}" is not a number: ${c[3]}`);
      assert.match(c[4] ?? '', /^\d+\.\d+×/, `ratio of "${c[0]}"`);
    }
    const p99 = rows.filter((c) => / p99$/.test(c[0]!));
    assert.equal(p99.length, 6, 'p99 rows for 4 manifest cases, the 4 KiB blob and the calibration');

    const limits = (r.stdout.split('## Machine limits')[1]?.split('\n## ')[0] ?? '')
      .split('\n')
      .filter((l) => l.startsWith('|') && !l.startsWith('|---') && !l.startsWith('| limit'))
      .map(cells);
    for (const name of EXPECTED_LIMITS) {
      const l = limits.find((c) => c[0]!.startsWith(name));
      assert.ok(l, `no limit "${name}"`);
      assert.ok(isNumber(l[1]), `limit "${l[0]}" is not a number: ${l[1]}`);
    }

    assert.ok(existsSync(out), 'markdown written to --out');
    const md = readFileSync(out, 'utf8');
    assert.match(md, /Node v\d+/);
    assert.match(md, /http\.workers/);
    const json = JSON.parse(readFileSync(join(dir, 'quick.json'), 'utf8')) as { rows: unknown[]; limits: unknown[] };
    assert.ok(json.rows.length >= rows.length);
    assert.ok(json.limits.length >= EXPECTED_LIMITS.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
