/** What every scenario receives, and the helpers that alternate the two servers. */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, RegistryClient } from './client.ts';
import type { Fixtures } from './fixtures.ts';
import type { Ceilings } from './limits.ts';
import type { LoadResult } from './load.ts';
import type { BenchOptions } from './options.ts';
import type { Results, Row, ServerId } from './results.ts';
import type { Running } from './servers.ts';

export interface Target {
  id: ServerId;
  label: string;
  running: Running;
  client: RegistryClient;
}

export interface Ctx {
  opts: BenchOptions;
  /** The machine's ceilings, measured inside each scenario's alternation. */
  ceilings: Ceilings;
  /** Distribution first, Berth second. */
  targets: Target[];
  results: Results;
  fixtures: Fixtures;
  log(s: string): void;
}

export function target(id: ServerId, label: string, running: Running): Target {
  return { id, label, running, client: new RegistryClient(new Client(running.url)) };
}

/**
 * Runs `fn` `runs` times per server and, when given, `ceiling` once per run: the participants take turns,
 * and the order rotates from one run to the next so that none is always first or last.
 */
export async function alternate(ctx: Ctx, runs: number, fn: (t: Target, run: number) => Promise<void>, ceiling?: (run: number) => Promise<void>): Promise<void> {
  for (let run = 0; run < runs; run++) {
    const turns: Array<() => Promise<void>> = ctx.targets.map((t) => () => fn(t, run));
    if (ceiling) turns.push(() => ceiling(run));
    const k = run % turns.length;
    for (const turn of [...turns.slice(k), ...turns.slice(0, k)]) await turn();
  }
}

/** Longest a settle waits for the storage's filesystem to flush before the measurement goes on anyway. */
const SETTLE_SYNC_TIMEOUT_MS = 120_000;

/**
 * Flushes the storage directory's filesystem (`sync -f`, not every filesystem of the machine) so that one
 * server's writes are not paid for during the other's measurement. Quick mode, whose figures mean nothing,
 * does not: beside other heavy tests a flush can take tens of seconds each time.
 */
export async function settle(opts: Pick<BenchOptions, 'quick' | 'storageDir'>): Promise<void> {
  if (!opts.quick) {
    await new Promise<void>((ok) => {
      const p = spawn('sync', ['-f', opts.storageDir], { stdio: 'ignore', timeout: SETTLE_SYNC_TIMEOUT_MS });
      p.once('error', () => ok());
      p.once('close', () => ok());
    });
  }
  await sleep(opts.quick ? 20 : 200);
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { seconds: (performance.now() - t0) / 1000, value };
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Records one measurement (or its failure) of `row` for `t`. */
export async function measure(ctx: Ctx, row: Row, t: Target, fn: () => Promise<number>): Promise<number | undefined> {
  try {
    const v = await fn();
    row.values[t.id].push(v);
    return v;
  } catch (e) {
    row.errors[t.id].push(errorText(e));
    ctx.log(`  ${row.scenario} on ${t.label} failed: ${errorText(e)}`);
    return undefined;
  }
}

/** Adds the req/s, p50 and p99 rows of a request-rate scenario and returns them. */
export function loadRows(ctx: Ctx, group: string, id: string, scenario: string, limitId: string | undefined, limitLabel: string): { rps: Row; p50: Row; p99: Row } {
  const limit = limitId ? { limit: { id: limitId, label: limitLabel } } : {};
  return {
    rps: ctx.results.row(`${id}-rps`, { group, scenario, unit: 'req/s', better: 'higher', ...limit }),
    p50: ctx.results.row(`${id}-p50`, { group, scenario: `${scenario} p50`, unit: 'ms', better: 'lower' }),
    p99: ctx.results.row(`${id}-p99`, { group, scenario: `${scenario} p99`, unit: 'ms', better: 'lower' }),
  };
}

/** Records a load result into its three rows; errors in the load make the run count as failed. */
export function recordLoad(rows: { rps: Row; p50: Row; p99: Row }, t: Target, r: LoadResult): void {
  if (r.errors > 0) {
    const msg = `${r.errors} of ${r.requests} requests failed (${r.errorDetail ?? 'no detail'})`;
    rows.rps.errors[t.id].push(msg);
    return;
  }
  rows.rps.values[t.id].push(r.rps);
  rows.p50.values[t.id].push(r.p50Ms);
  rows.p99.values[t.id].push(r.p99Ms);
}

export const MB = 1e6;
