/**
 * The machine's own limits, measured in the same run. sha256 and sequential disk write/read in the storage
 * directory are measured first. The ceilings the scenarios are compared with — loopback streaming, the
 * bare Node push server, a trivial Node server's request rate, nginx serving the manifest and a 4 KiB blob
 * as static files — are {@link Ceilings} measured inside each scenario's alternation, next to the two
 * registries, so that a machine whose load drifts during the run skews both sides alike.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, promises as fsp, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client } from './client.ts';
import { MB, errorText, settle } from './context.ts';
import { PATTERN, PATTERN_SIZE, PatternBlob } from './data.ts';
import type { Fixtures } from './fixtures.ts';
import { curlDownload, hey, wrk, type LoadOptions, type LoadResult } from './load.ts';
import { formatBytes, type BenchOptions } from './options.ts';
import type { Results } from './results.ts';
import { startBare, startNginx, type Running } from './servers.ts';

export const LIMIT = {
  sha256: 'sha256',
  diskWrite: 'disk-write',
  diskWriteSync: 'disk-write-fsync',
  diskWriteDirect: 'disk-write-direct',
  diskRead: 'disk-read-cached',
  diskReadDirect: 'disk-read-direct',
  loopback: 'loopback-http',
  barePush: 'bare-push',
  barePushSync: 'bare-push-fsync',
  barePushConcurrent: 'bare-push-concurrent',
  nodeHello: 'node-hello',
  nginxManifestGet: 'nginx-manifest-get',
  nginxManifestHead: 'nginx-manifest-head',
  nginxBlob4k: 'nginx-blob-4k',
} as const;

function sha256Throughput(bytes: number): number {
  const h = createHash('sha256');
  const n = Math.max(1, Math.round(bytes / PATTERN_SIZE));
  const t0 = performance.now();
  for (let i = 0; i < n; i++) h.update(PATTERN);
  h.digest();
  return (n * PATTERN_SIZE) / MB / ((performance.now() - t0) / 1000);
}

interface DiskResult {
  write: number;
  writeSync: number;
  read: number;
  direct?: number;
  directWrite?: number;
}

async function disk(dir: string, bytes: number): Promise<DiskResult> {
  const file = join(dir, 'probe.bin');
  const n = Math.max(1, Math.round(bytes / PATTERN_SIZE));
  const size = n * PATTERN_SIZE;
  const h = await fsp.open(file, 'w');
  const t0 = performance.now();
  try {
    for (let i = 0; i < n; i++) await h.write(PATTERN, 0, PATTERN_SIZE);
    const t1 = performance.now();
    await h.sync();
    const t2 = performance.now();
    await h.close();
    const r0 = performance.now();
    await new Promise<void>((ok, fail) => {
      const s = createReadStream(file, { highWaterMark: PATTERN_SIZE });
      s.on('data', () => undefined);
      s.once('end', ok);
      s.once('error', fail);
    });
    const r1 = performance.now();
    const out: DiskResult = { write: size / MB / ((t1 - t0) / 1000), writeSync: size / MB / ((t2 - t0) / 1000), read: size / MB / ((r1 - r0) / 1000) };
    // O_DIRECT bypasses the page cache: what the disk itself delivers.
    const d0 = performance.now();
    const dd = spawnSync('dd', [`if=${file}`, 'of=/dev/null', 'bs=4M', 'iflag=direct'], { stdio: 'ignore' });
    const d1 = performance.now();
    if (dd.status === 0) out.direct = size / MB / ((d1 - d0) / 1000);
    // Durable writes past the page cache, flushed at the end: what the device (on a VM, the host) accepts,
    // the ceiling of any push a registry acknowledges only once the bytes are on disk.
    const w0 = performance.now();
    const dw = spawnSync('dd', ['if=/dev/zero', `of=${file}`, 'bs=4M', `count=${Math.max(1, Math.round(size / (4 * 1024 * 1024)))}`, 'oflag=direct', 'conv=fdatasync'], { stdio: 'ignore' });
    const w1 = performance.now();
    if (dw.status === 0) out.directWrite = size / MB / ((w1 - w0) / 1000);
    return out;
  } finally {
    await h.close().catch(() => undefined);
    rmSync(file, { force: true });
  }
}

function recordLoad(results: Results, id: string, label: string, how: string, r: LoadResult): void {
  const l = results.limit(id, label, 'req/s', how);
  if (r.errors > 0) l.error = `${r.errors} errors: ${r.errorDetail ?? ''}`;
  else results.record(l, r.rps);
}

/** sha256 and the disk, before anything else runs. */
export async function measureStaticLimits(opts: BenchOptions, results: Results, log: (s: string) => void): Promise<void> {
  const runs = opts.runs;
  const sizeLabel = formatBytes(opts.limitSize);
  log(`limits: sha256 and disk (${sizeLabel})`);
  const sha = results.limit(LIMIT.sha256, 'sha256 (node crypto, one core)', 'MB/s', `hash ${sizeLabel} of a 1 MiB buffer`);
  for (let i = 0; i < runs; i++) results.record(sha, sha256Throughput(opts.limitSize));

  const probeDir = mkdtempSync(join(opts.storageDir, 'bench-disk-'));
  try {
    const w = results.limit(LIMIT.diskWrite, 'disk sequential write (buffered)', 'MB/s', `${sizeLabel} in 1 MiB writes into the storage directory, without fsync`);
    const ws = results.limit(LIMIT.diskWriteSync, 'disk sequential write + fsync', 'MB/s', 'the same, until fsync returned');
    const r = results.limit(LIMIT.diskRead, 'disk sequential read (page cache)', 'MB/s', 'read back right after writing (as a pull of a fresh blob sees it)');
    const wd = results.limit(LIMIT.diskWriteDirect, 'disk sequential write (O_DIRECT) + fsync', 'MB/s', 'dd oflag=direct conv=fdatasync bs=4M: durable writes the device takes from one writer');
    const rd = results.limit(LIMIT.diskReadDirect, 'disk sequential read (O_DIRECT)', 'MB/s', 'dd iflag=direct bs=4M: the device itself');
    for (let i = 0; i < runs; i++) {
      await settle(opts);
      try {
        const d = await disk(probeDir, opts.limitSize);
        results.record(w, d.write);
        results.record(ws, d.writeSync);
        results.record(r, d.read);
        if (d.direct !== undefined) results.record(rd, d.direct);
        else rd.error = 'dd iflag=direct failed';
        if (d.directWrite !== undefined) results.record(wd, d.directWrite);
        else wd.error = 'dd oflag=direct failed';
      } catch (e) {
        w.error = errorText(e);
      }
    }
  } finally {
    rmSync(probeDir, { recursive: true, force: true });
  }
}

/**
 * The reference servers (bare Node server, nginx), kept running through the benchmark; each method takes
 * one measurement of a ceiling and records it (or its failure) in the results.
 */
export class Ceilings {
  private warmed = new Set<string>();

  private constructor(
    private readonly opts: BenchOptions,
    private readonly results: Results,
    private readonly bare: Running | undefined,
    private readonly client: Client | undefined,
    private readonly nginx: Running | undefined,
  ) {}

  /** Starts the bare server and nginx when a selected scenario needs them. */
  static async start(opts: BenchOptions, results: Results, fx: Fixtures, want: (group: string) => boolean, log: (s: string) => void): Promise<Ceilings> {
    let bare: Running | undefined;
    let nginx: Running | undefined;
    try {
      if (['mono', 'chunked', 'pull', 'concurrent', 'base'].some(want)) {
        log('starting the bare Node server (push, streaming and request-rate ceilings)');
        bare = await startBare(opts.storageDir);
      }
      if (['manifest', 'blob4k'].some(want)) {
        log('starting nginx (static manifest and 4 KiB blob: request-rate ceilings)');
        nginx = await startNginx(opts.storageDir, { 'manifest.json': fx.manifest.data, 'blob4k.bin': fx.layers[0]!.data });
      }
    } catch (e) {
      await bare?.stop();
      throw e;
    }
    return new Ceilings(opts, results, bare, bare ? new Client(bare.url) : undefined, nginx);
  }

  async stop(): Promise<void> {
    this.client?.close();
    await Promise.all([this.bare?.stop(), this.nginx?.stop()]);
  }

  /** Servers to watch (peak RSS is not reported for them, but their death is an error). */
  running(): Running[] {
    return [this.bare, this.nginx].filter((r): r is Running => r !== undefined);
  }

  private async guard(id: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      const l = this.results.limits.find((x) => x.id === id);
      if (l) l.error = errorText(e);
      else this.results.limit(id, id, '', '').error = errorText(e);
    }
  }

  private need<T>(v: T | undefined, what: string): T {
    if (v === undefined) throw new Error(`${what} is not running`);
    return v;
  }

  /** GET of `--blob-size` bytes streamed by a trivial Node server: the pull ceiling. */
  async loopback(): Promise<void> {
    const o = this.opts;
    const row = this.results.limit(LIMIT.loopback, 'loopback HTTP, trivial Node server streaming', 'MB/s', `GET ${formatBytes(o.blobSize)} from a repeated buffer, read and discarded by curl`);
    await this.guard(row.id, async () => {
      const bare = this.need(this.bare, 'bare server');
      const got = await curlDownload(`${bare.url}/stream?size=${o.blobSize}`, o.blobSize);
      this.results.record(row, got.bytes / MB / got.seconds);
    });
  }

  /** A `--blob-size` push to the bare server, without and with fsync: the push ceilings. */
  async push(run: number): Promise<void> {
    const o = this.opts;
    const label = formatBytes(o.blobSize);
    const bp = this.results.limit(LIMIT.barePush, 'bare Node push: sha256 + write to file', 'MB/s', `PUT ${label}; the server hashes while writing a file (push ceiling)`);
    const bps = this.results.limit(LIMIT.barePushSync, 'bare Node push + fsync', 'MB/s', 'the same, fsync before the 201');
    await this.guard(bp.id, async () => {
      const client = this.need(this.client, 'bare server');
      for (const [row, fsync] of [
        [bp, false],
        [bps, true],
      ] as const) {
        const blob = new PatternBlob(o.blobSize, `ceiling-${run}-${fsync}`);
        void blob.digest;
        await settle(this.opts);
        const t0 = performance.now();
        await client.request('PUT', `/push/x?digest=${blob.digest}${fsync ? '&fsync=1' : ''}`, { body: { blob }, expect: [201] });
        this.results.record(row, blob.size / MB / ((performance.now() - t0) / 1000));
      }
    });
  }

  /** `--concurrency` pushes of `--concurrent-size` at once to the bare server. */
  async concurrent(run: number): Promise<void> {
    const o = this.opts;
    const row = this.results.limit(
      LIMIT.barePushConcurrent,
      `bare Node push, ${o.concurrency} concurrent`,
      'MB/s',
      `${o.concurrency} × ${formatBytes(o.concurrentSize)} at once, aggregate`,
    );
    await this.guard(row.id, async () => {
      const client = this.need(this.client, 'bare server');
      const blobs = Array.from({ length: o.concurrency }, (_, k) => new PatternBlob(o.concurrentSize, `ceiling-conc-${run}-${k}`));
      for (const b of blobs) void b.digest;
      await settle(this.opts);
      const t0 = performance.now();
      await Promise.all(blobs.map((b) => client.request('PUT', `/push/x?digest=${b.digest}`, { body: { blob: b }, expect: [201] })));
      this.results.record(row, (o.concurrency * o.concurrentSize) / MB / ((performance.now() - t0) / 1000));
    });
  }

  private async rate(id: string, label: string, how: string, url: () => string, method: 'GET' | 'HEAD'): Promise<void> {
    this.results.limit(id, label, 'req/s', how);
    await this.guard(id, async () => {
      const target = url();
      const lo: LoadOptions = { connections: this.opts.connections, duration: this.opts.duration };
      const go = (o: LoadOptions): Promise<LoadResult> => (method === 'HEAD' ? hey(target, 'HEAD', o) : wrk(target, o));
      if (!this.warmed.has(id) && this.opts.warmup > 0) {
        this.warmed.add(id);
        await go({ ...lo, duration: this.opts.warmup });
      }
      recordLoad(this.results, id, label, how, await go(lo));
    });
  }

  /** GET of an empty 200 from a trivial Node server (one process). */
  async hello(): Promise<void> {
    const url = (): string => `${this.need(this.bare, 'bare server').url}/`;
    await this.rate(LIMIT.nodeHello, 'trivial Node server (one process): GET, empty 200', `wrk, ${this.opts.connections} connections`, url, 'GET');
  }

  async nginxManifest(method: 'GET' | 'HEAD', size: number): Promise<void> {
    const url = (): string => `${this.need(this.nginx, 'nginx').url}/manifest.json`;
    const c = this.opts.connections;
    if (method === 'GET') await this.rate(LIMIT.nginxManifestGet, `nginx: manifest (${size} B) GET`, `wrk, ${c} connections, static file`, url, 'GET');
    else await this.rate(LIMIT.nginxManifestHead, 'nginx: manifest HEAD', `hey, ${c} connections, static file`, url, 'HEAD');
  }

  async nginxBlob4k(): Promise<void> {
    const url = (): string => `${this.need(this.nginx, 'nginx').url}/blob4k.bin`;
    await this.rate(LIMIT.nginxBlob4k, 'nginx: 4 KiB file GET', `wrk, ${this.opts.connections} connections, static file`, url, 'GET');
  }
}
