/** Command-line options of the benchmark, with the full (default) and `--quick` presets. */
import { parseArgs } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BENCH_DIR } from './paths.ts';

export type BerthRuntime = 'auto' | 'dist' | 'tsx';

export interface BenchOptions {
  quick: boolean;
  /** Measurements per scenario and server; the table shows the median. */
  runs: number;
  /** Size of the large blob (monolithic push, chunked push, pull). */
  blobSize: number;
  chunkSize: number;
  /** Concurrent pushes and the size of each. */
  concurrency: number;
  concurrentSize: number;
  /** Repositories in the catalog scenario, tags in the tags scenario, page size of both. */
  repos: number;
  tags: number;
  pageSize: number;
  /** Concurrent requests while creating repositories and tags (setup, not measured in the table). */
  setupConcurrency: number;
  /** Connections of the request-rate scenarios (wrk / hey). */
  connections: number;
  /** Duration of each request-rate measurement and of the warm-up before the first, in seconds. */
  duration: number;
  warmup: number;
  /** Bytes hashed / written / streamed when measuring the machine's limits. */
  limitSize: number;
  berthWorkers: number;
  berthRuntime: BerthRuntime;
  /** Markdown output file; a `.json` with the raw measurements is written next to it. */
  out: string;
  /** Parent directory of every storage root and of the disk probe. */
  storageDir: string;
  /** Storage driver of both registries: filesystem, or s3 against an S3-protocol server (s3rver) on loopback. */
  storage: 'filesystem' | 's3';
  /** Only these scenario ids (comma-separated on the command line); empty = all. */
  only: string[];
  /** Skip installing missing Debian packages. */
  noInstall: boolean;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const FULL = {
  runs: 3,
  blobSize: GiB,
  chunkSize: 16 * MiB,
  concurrency: 32,
  concurrentSize: 32 * MiB,
  repos: 2000,
  tags: 10_000,
  pageSize: 100,
  setupConcurrency: 16,
  connections: 64,
  duration: 10,
  warmup: 2,
  limitSize: GiB,
};

const QUICK: typeof FULL = {
  runs: 1,
  blobSize: 16 * MiB,
  chunkSize: 4 * MiB,
  concurrency: 32,
  concurrentSize: 256 * KiB,
  repos: 120,
  tags: 250,
  pageSize: 50,
  setupConcurrency: 16,
  connections: 64,
  duration: 1,
  warmup: 0.3,
  limitSize: 32 * MiB,
};

/** Parses `1GiB`, `16MiB`, `512k`, `4096` (bytes). */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(s.trim());
  if (!m) throw new Error(`not a size: ${s} (expected e.g. 1GiB, 16MiB, 4096)`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult = unit.startsWith('g') ? GiB : unit.startsWith('m') ? MiB : unit.startsWith('k') ? KiB : 1;
  return Math.round(Number(m[1]) * mult);
}

/** Parses `10`, `10s`, `500ms` into seconds. */
export function parseSeconds(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s)?$/.exec(s.trim());
  if (!m) throw new Error(`not a duration: ${s} (expected e.g. 10s, 500ms)`);
  return m[2] === 'ms' ? Number(m[1]) / 1000 : Number(m[1]);
}

function int(s: string, name: string, min = 0): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got ${s}`);
  return n;
}

export const USAGE = `usage: node --import tsx bench/run.ts [options]

  --quick                 small sizes, 1 run, 1 s load tests (CI)
  --runs N                measurements per scenario and server (median shown; default 3)
  --blob-size SIZE        large blob for monolithic/chunked push and pull (default 1GiB)
  --chunk-size SIZE       chunk of the chunked push (default 16MiB)
  --concurrency N         concurrent pushes (default 32)
  --concurrent-size SIZE  size of each concurrent push (default 32MiB)
  --repos N               repositories in the catalog scenario (default 2000)
  --tags N                tags in the tags-list scenario (default 10000)
  --page-size N           n= of catalog and tags pagination (default 100)
  --setup-concurrency N   parallel requests while creating repositories/tags (default 16)
  --connections N         connections of request-rate tests (default 64)
  --duration SECONDS      each request-rate measurement (default 10s)
  --warmup SECONDS        warm-up before request-rate measurements (default 2s)
  --limit-size SIZE       bytes used to measure the machine limits (default 1GiB)
  --berth-workers N       Berth http.workers (default $BENCH_BERTH_WORKERS or 0 = one per CPU)
  --berth-runtime R       auto (dist/, rebuilt when stale; tsx if the build fails) | dist | tsx (default auto)
  --storage-dir DIR       parent of the storage roots and the disk probe (default: the OS temp dir)
  --storage DRIVER        filesystem (default) or s3: both registries on one s3rver on loopback, redirects off
  --only IDS              comma-separated scenario ids: mono,chunked,pull,concurrent,base,manifest,blob4k,catalog,tags
  --no-install            do not apt-get install missing tools
  --out FILE              markdown output (default bench/results/latest.md; raw JSON next to it)`;

export function parseOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      runs: { type: 'string' },
      'blob-size': { type: 'string' },
      'chunk-size': { type: 'string' },
      concurrency: { type: 'string' },
      'concurrent-size': { type: 'string' },
      repos: { type: 'string' },
      tags: { type: 'string' },
      'page-size': { type: 'string' },
      'setup-concurrency': { type: 'string' },
      connections: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      'limit-size': { type: 'string' },
      'berth-workers': { type: 'string' },
      'berth-runtime': { type: 'string' },
      'storage-dir': { type: 'string' },
      storage: { type: 'string' },
      only: { type: 'string' },
      'no-install': { type: 'boolean', default: false },
      out: { type: 'string' },
    },
  });
  if (values.help) return 'help';
  const base = values.quick ? QUICK : FULL;
  const runtime = values['berth-runtime'] ?? 'auto';
  if (runtime !== 'auto' && runtime !== 'dist' && runtime !== 'tsx') throw new Error(`--berth-runtime: expected auto, dist or tsx, got ${runtime}`);
  const storage = values.storage ?? 'filesystem';
  if (storage !== 'filesystem' && storage !== 's3') throw new Error(`--storage: expected filesystem or s3, got ${storage}`);
  const o: BenchOptions = {
    quick: values.quick ?? false,
    runs: values.runs !== undefined ? int(values.runs, 'runs', 1) : base.runs,
    blobSize: values['blob-size'] !== undefined ? parseSize(values['blob-size']) : base.blobSize,
    chunkSize: values['chunk-size'] !== undefined ? parseSize(values['chunk-size']) : base.chunkSize,
    concurrency: values.concurrency !== undefined ? int(values.concurrency, 'concurrency', 1) : base.concurrency,
    concurrentSize: values['concurrent-size'] !== undefined ? parseSize(values['concurrent-size']) : base.concurrentSize,
    repos: values.repos !== undefined ? int(values.repos, 'repos', 1) : base.repos,
    tags: values.tags !== undefined ? int(values.tags, 'tags', 1) : base.tags,
    pageSize: values['page-size'] !== undefined ? int(values['page-size'], 'page-size', 1) : base.pageSize,
    setupConcurrency: values['setup-concurrency'] !== undefined ? int(values['setup-concurrency'], 'setup-concurrency', 1) : base.setupConcurrency,
    connections: values.connections !== undefined ? int(values.connections, 'connections', 1) : base.connections,
    duration: values.duration !== undefined ? parseSeconds(values.duration) : base.duration,
    warmup: values.warmup !== undefined ? parseSeconds(values.warmup) : base.warmup,
    limitSize: values['limit-size'] !== undefined ? parseSize(values['limit-size']) : base.limitSize,
    berthWorkers: int(values['berth-workers'] ?? env.BENCH_BERTH_WORKERS ?? '0', 'berth-workers'),
    berthRuntime: runtime,
    out: values.out ?? join(BENCH_DIR, 'results', 'latest.md'),
    storageDir: values['storage-dir'] ?? tmpdir(),
    storage,
    only: (values.only ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    noInstall: values['no-install'] ?? false,
  };
  if (o.chunkSize <= 0 || o.blobSize <= 0 || o.concurrentSize <= 0 || o.limitSize <= 0) throw new Error('sizes must be positive');
  return o;
}

export function formatBytes(n: number): string {
  if (n >= GiB && n % GiB === 0) return `${n / GiB} GiB`;
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= KiB && n % KiB === 0) return `${n / KiB} KiB`;
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${n} B`;
}
