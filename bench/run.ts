/**
 * `npm run bench`: Berth against Debian's docker-registry (distribution 2.8) with equivalent configurations,
 * every scenario alternating between them, plus the machine's own limits measured in the same run.
 * Prints one Markdown report and writes it to `--out` (default bench/results/latest.md) with the raw
 * measurements as JSON next to it. Exits 1 when any measurement failed.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuBetween, cpuSnapshot, type CpuUse } from './cpu.ts';
import { errorText, target, type Ctx } from './context.ts';
import { fixtures } from './fixtures.ts';
import { Ceilings, measureStaticLimits } from './limits.ts';
import { machineFacts } from './machine.ts';
import { USAGE, formatBytes, parseOptions, type BenchOptions } from './options.ts';
import { Results, type ServerId } from './results.ts';
import { chunkedPush, concurrentPush, monolithicPush, pull } from './scenarios/blobs.ts';
import { catalog, tagsList } from './scenarios/listing.ts';
import { baseRequests, blob4kRequests, manifestRequests, setupApp } from './scenarios/requests.ts';
import { distributionVersion, ensureTools, prepareBerth, startBerth, startDistribution, toolVersions, type ProcessRss, type Running } from './servers.ts';
import { report } from './table.ts';
import { startS3, type RunningS3 } from '../test/helpers/servers.ts';

const started = performance.now();
function log(s: string): void {
  const t = ((performance.now() - started) / 1000).toFixed(0).padStart(4);
  process.stderr.write(`[bench ${t}s] ${s}\n`);
}

interface Scenario {
  id: string;
  run: (ctx: Ctx) => Promise<void>;
  /** Needs bench/app (config, layers, manifest) on both servers. */
  needsApp?: boolean;
}

const SCENARIOS: Scenario[] = [
  { id: 'mono', run: monolithicPush },
  { id: 'chunked', run: chunkedPush },
  { id: 'pull', run: pull },
  { id: 'concurrent', run: concurrentPush },
  { id: 'base', run: baseRequests },
  { id: 'manifest', run: manifestRequests, needsApp: true },
  { id: 'blob4k', run: blob4kRequests, needsApp: true },
  { id: 'catalog', run: catalog, needsApp: true },
  { id: 'tags', run: tagsList, needsApp: true },
];

function modeText(o: BenchOptions): string {
  return [
    o.quick ? 'quick' : 'full',
    `${o.runs} run${o.runs === 1 ? '' : 's'} per scenario and server (alternating)`,
    `blob ${formatBytes(o.blobSize)}, chunks ${formatBytes(o.chunkSize)}`,
    `${o.concurrency} × ${formatBytes(o.concurrentSize)} concurrent`,
    `${o.repos} repositories, ${o.tags} tags, n=${o.pageSize}`,
    `${o.connections} connections × ${o.duration} s (warm-up ${o.warmup} s)`,
    `limits on ${formatBytes(o.limitSize)}`,
  ].join('; ');
}

function mib(n: number): number {
  return n / 1024 / 1024;
}

function rssText(p: ProcessRss[]): string {
  if (p.length <= 1) return `${fmtMiB(p[0]?.peak ?? 0)} MiB`;
  return `primary ${fmtMiB(p[0]!.peak)} MiB + workers ${p
    .slice(1)
    .map((x) => fmtMiB(x.peak))
    .join(' + ')} MiB`;
}

function fmtMiB(n: number): string {
  return mib(n).toFixed(0);
}

async function main(): Promise<number> {
  const parsed = parseOptions(process.argv.slice(2));
  if (parsed === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const opts = parsed;
  mkdirSync(opts.storageDir, { recursive: true });
  ensureTools(opts.noInstall, log);
  const launch = prepareBerth(opts.berthRuntime, log);
  const machine = machineFacts(opts.storageDir);
  const fx = fixtures();
  const results = new Results();
  const notes: string[] = [];
  const want = (id: string): boolean => opts.only.length === 0 || opts.only.includes(id);

  const cpuStart = cpuSnapshot();
  let cpuMark = cpuStart;
  const cpu: Array<{ segment: string } & CpuUse> = [];
  const cpuSegment = (segment: string): void => {
    const now = cpuSnapshot();
    cpu.push({ segment, ...cpuBetween(cpuMark, now) });
    cpuMark = now;
  };

  await measureStaticLimits(opts, results, log);
  cpuSegment('limits');

  const ceilings = await Ceilings.start(opts, results, fx, want, log);
  log('starting docker-registry and Berth');
  let dist: Awaited<ReturnType<typeof startDistribution>>;
  let berth: Awaited<ReturnType<typeof startBerth>>;
  let s3: RunningS3 | undefined;
  try {
    if (opts.storage === 's3') {
      log('starting s3rver (S3-protocol server) on loopback for both registries');
      s3 = await startS3();
    }
    dist = await startDistribution({ parent: opts.storageDir, ...(s3 ? { s3 } : {}) });
    try {
      berth = await startBerth(launch, opts.berthWorkers, { parent: opts.storageDir, ...(s3 ? { s3 } : {}) });
    } catch (e) {
      await dist.stop();
      throw e;
    }
  } catch (e) {
    await ceilings.stop();
    await s3?.stop();
    throw e;
  }
  const servers: Record<ServerId, Running> = { distribution: dist, berth };
  const ctx: Ctx = { opts, ceilings, targets: [target('distribution', 'distribution', dist), target('berth', 'Berth', berth)], results, fixtures: fx, log };
  // Each entry: the summed VmHWM reached during that segment alone (the marks are reset after each).
  const timeline: Array<{ after: string; peakRssBytes: Record<ServerId, number> }> = [];
  const snapshot = (after: string): void => {
    timeline.push({ after, peakRssBytes: { distribution: dist.segmentPeak(), berth: berth.segmentPeak() } });
  };
  let rss: Record<ServerId, ProcessRss[]> = { distribution: [], berth: [] };
  try {
    const selected = SCENARIOS.filter((s) => want(s.id));
    if (selected.some((s) => s.needsApp)) {
      log('setup: bench/app (config, 4 layers, manifest) on both servers');
      await setupApp(ctx);
    }
    snapshot('start');
    for (const s of selected) {
      results.group = s.id;
      try {
        await s.run(ctx);
      } catch (e) {
        const msg = `scenario ${s.id} aborted: ${errorText(e)}`;
        log(msg);
        for (const r of results.rows.filter((x) => x.group === s.id)) for (const t of ctx.targets) if (r.values[t.id].length === 0 && r.errors[t.id].length === 0) r.errors[t.id].push(msg);
        if (!results.rows.some((x) => x.group === s.id)) {
          const r = results.row(s.id, { group: s.id, scenario: s.id, unit: '', better: 'higher' });
          for (const t of ctx.targets) r.errors[t.id].push(msg);
        }
      }
      snapshot(s.id);
      cpuSegment(s.id);
      for (const r of [...ctx.targets.map((t) => t.running), ...ceilings.running()]) {
        if (r.proc.exitCode !== null || r.proc.signalCode !== null) throw new Error(`${r.name} died during ${s.id}:\n${r.logs()}`);
      }
    }
    rss = { distribution: dist.peakRss(), berth: berth.peakRss() };
    const rssRow = results.row('rss', {
      group: 'rss',
      scenario: 'peak RSS across the run (VmHWM, summed over the server’s processes)',
      unit: 'MiB',
      better: 'lower',
      notes: [
        `distribution ${rssText(rss.distribution)}; Berth ${rssText(rss.berth)} (${(sum(rss.berth) / 1e6).toFixed(0)} MB)`,
        `summed VmHWM during each scenario alone, distribution / Berth (MiB): ${timeline
          .map((t) => `${t.after} ${fmtMiB(t.peakRssBytes.distribution)} / ${fmtMiB(t.peakRssBytes.berth)}`)
          .join('; ')}`,
      ],
    });
    rssRow.values.distribution.push(mib(sum(rss.distribution)));
    rssRow.values.berth.push(mib(sum(rss.berth)));
    const pssRow = results.row('pss', {
      group: 'rss',
      scenario: 'peak memory of the process tree (PSS summed over processes, sampled every 250 ms; shared pages counted once)',
      unit: 'MiB',
      better: 'lower',
    });
    pssRow.values.distribution.push(mib(dist.peakPss()));
    pssRow.values.berth.push(mib(berth.peakPss()));
  } finally {
    for (const t of ctx.targets) t.client.http.close();
    for (const [id, r] of Object.entries(servers)) {
      const lines = r
        .logs()
        .split('\n')
        .filter((l) => l.trim() !== '');
      if (lines.length > 0) notes.push(`${id} logged ${lines.length} line(s) at warn level or above; last: ${lines[lines.length - 1]!.slice(0, 400)}`);
    }
    await Promise.all([dist.stop(), berth.stop(), ceilings.stop()]);
    await s3?.stop();
  }
  const total = cpuBetween(cpuStart, cpuSnapshot());
  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
  notes.push(
    `other processes on this machine used ${total.foreign.toFixed(0)} CPU-seconds during the run (${pct(total.foreignShare)} of its capacity); steal time ${pct(total.stealShare)}`,
  );
  const disturbed = cpu.filter((c) => c.foreignShare > 0.1 || c.stealShare > 0.1);
  if (disturbed.length > 0) {
    notes.push(
      `possibly disturbed by other load (>10% of the machine): ${disturbed.map((c) => `${c.segment} (others ${pct(c.foreignShare)}, steal ${pct(c.stealShare)})`).join(', ')}`,
    );
  }

  const berthText = `${launch.note}; http.workers ${opts.berthWorkers}${opts.berthWorkers === 0 ? ` (one per CPU = ${berth.workers} processes)` : ''}`;
  const md = report(
    {
      machine,
      berth: berthText,
      distribution: distributionVersion(),
      tools: toolVersions(),
      mode: modeText(opts),
      elapsedSeconds: (performance.now() - started) / 1000,
    },
    results,
    [
      opts.storage === 's3'
        ? 'both registries: s3 storage on one s3rver (npm, on loopback; its own speed bounds both), each under its own rootdirectory, redirects disabled so blobs stream through the registry, deletes enabled, upload purging off, blobdescriptor cache inmemory, access log off, log level warn, 127.0.0.1'
        : 'both registries: filesystem storage in a fresh temp directory, deletes enabled, upload purging off, blobdescriptor cache inmemory, access log off, log level warn, 127.0.0.1',
      ...(opts.storage === 's3' ? [] : ['Berth fsyncs blob data and metadata before acknowledging; distribution 2.8 does not fsync']),
      ...notes,
    ],
  );
  process.stdout.write(`${md}\n`);
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, md);
  const json = opts.out.replace(/\.md$/, '') + '.json';
  writeFileSync(json, `${JSON.stringify({ machine, options: opts, berth: berthText, rows: results.rows, limits: results.limits, rss, timeline, cpu, cpuTotal: total }, null, 2)}\n`);
  log(`wrote ${opts.out} and ${json}`);
  const failures = results.failures();
  if (failures.length > 0) {
    log(`${failures.length} measurement(s) failed`);
    return 1;
  }
  return 0;
}

function sum(p: ProcessRss[]): number {
  return p.reduce((a, b) => a + b.peak, 0);
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(2);
  },
);
