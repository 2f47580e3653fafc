/**
 * The machine's own limits, measured in the same run: sha256, sequential disk write/read in the storage
 * directory, loopback HTTP streaming and push ceilings through the bare Node server, and nginx serving a
 * manifest and a 4 KiB blob as static files (the request-rate ceilings).
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
import { hey, wrk, type LoadResult } from './load.ts';
import { formatBytes, type BenchOptions } from './options.ts';
import type { Results } from './results.ts';
import { startBare, startNginx } from './servers.ts';

export const LIMIT = {
  sha256: 'sha256',
  diskWrite: 'disk-write',
  diskWriteSync: 'disk-write-fsync',
  diskRead: 'disk-read-cached',
  diskReadDirect: 'disk-read-direct',
  loopback: 'loopback-http',
  barePush: 'bare-push',
  barePushSync: 'bare-push-fsync',
  barePushConcurrent: 'bare-push-concurrent',
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
    return out;
  } finally {
    await h.close().catch(() => undefined);
    rmSync(file, { force: true });
  }
}

function recordLoad(results: Results, id: string, label: string, how: string, r: LoadResult): void {
  const l = results.limit(id, label, 'req/s', how);
  if (r.errors > 0) l.error = `${r.errors} errors: ${r.errorDetail ?? ''}`;
  else l.values.push(r.rps);
}

export async function measureLimits(opts: BenchOptions, results: Results, fx: Fixtures, log: (s: string) => void): Promise<void> {
  const runs = opts.runs;
  const sizeLabel = formatBytes(opts.limitSize);
  log(`limits: sha256 and disk (${sizeLabel})`);
  const sha = results.limit(LIMIT.sha256, 'sha256 (node crypto, one core)', 'MB/s', `hash ${sizeLabel} of a 1 MiB buffer`);
  for (let i = 0; i < runs; i++) sha.values.push(sha256Throughput(opts.limitSize));

  const probeDir = mkdtempSync(join(opts.storageDir, 'bench-disk-'));
  try {
    const w = results.limit(LIMIT.diskWrite, 'disk sequential write (buffered)', 'MB/s', `${sizeLabel} in 1 MiB writes into the storage directory, without fsync`);
    const ws = results.limit(LIMIT.diskWriteSync, 'disk sequential write + fsync', 'MB/s', 'the same, until fsync returned');
    const r = results.limit(LIMIT.diskRead, 'disk sequential read (page cache)', 'MB/s', 'read back right after writing (as a pull of a fresh blob sees it)');
    const rd = results.limit(LIMIT.diskReadDirect, 'disk sequential read (O_DIRECT)', 'MB/s', 'dd iflag=direct bs=4M: the device itself');
    for (let i = 0; i < runs; i++) {
      await settle();
      try {
        const d = await disk(probeDir, opts.limitSize);
        w.values.push(d.write);
        ws.values.push(d.writeSync);
        r.values.push(d.read);
        if (d.direct !== undefined) rd.values.push(d.direct);
        else rd.error = 'dd iflag=direct failed';
      } catch (e) {
        w.error = errorText(e);
      }
    }
  } finally {
    rmSync(probeDir, { recursive: true, force: true });
  }

  log('limits: bare Node server (loopback stream, push)');
  const bare = await startBare(opts.storageDir);
  const client = new Client(bare.url);
  try {
    const blobLabel = formatBytes(opts.blobSize);
    const lo = results.limit(LIMIT.loopback, 'loopback HTTP, trivial Node server streaming', 'MB/s', `GET ${blobLabel} from a repeated buffer, read and discarded by the harness client`);
    const bp = results.limit(LIMIT.barePush, 'bare Node push: sha256 + write to file', 'MB/s', `PUT ${blobLabel}; the server hashes while writing a file (push ceiling)`);
    const bps = results.limit(LIMIT.barePushSync, 'bare Node push + fsync', 'MB/s', 'the same, fsync before the 201');
    const bpc = results.limit(
      LIMIT.barePushConcurrent,
      `bare Node push, ${opts.concurrency} concurrent`,
      'MB/s',
      `${opts.concurrency} × ${formatBytes(opts.concurrentSize)} at once, aggregate`,
    );
    for (let i = 0; i < runs; i++) {
      try {
        let t0 = performance.now();
        const got = await client.request('GET', `/stream?size=${opts.blobSize}`, { discard: true, expect: [200] });
        lo.values.push(got.bytes / MB / ((performance.now() - t0) / 1000));

        for (const [row, fsync] of [
          [bp, false],
          [bps, true],
        ] as const) {
          const blob = new PatternBlob(opts.blobSize, `limit-${i}-${fsync}`);
          const digest = blob.digest;
          await settle();
          t0 = performance.now();
          await client.request('PUT', `/push/x?digest=${digest}${fsync ? '&fsync=1' : ''}`, { body: { blob }, expect: [201] });
          row.values.push(blob.size / MB / ((performance.now() - t0) / 1000));
        }

        const blobs = Array.from({ length: opts.concurrency }, (_, k) => new PatternBlob(opts.concurrentSize, `limit-conc-${i}-${k}`));
        for (const b of blobs) void b.digest;
        await settle();
        t0 = performance.now();
        await Promise.all(blobs.map((b) => client.request('PUT', `/push/x?digest=${b.digest}`, { body: { blob: b }, expect: [201] })));
        bpc.values.push((opts.concurrency * opts.concurrentSize) / MB / ((performance.now() - t0) / 1000));
      } catch (e) {
        bp.error = errorText(e);
      }
    }
  } finally {
    client.close();
    await bare.stop();
  }

  log('limits: nginx static files');
  const nginx = await startNginx(opts.storageDir, { 'manifest.json': fx.manifest.data, 'blob4k.bin': fx.layers[0]!.data });
  try {
    const lo = { connections: opts.connections, duration: opts.duration };
    const manifestUrl = `${nginx.url}/manifest.json`;
    const blobUrl = `${nginx.url}/blob4k.bin`;
    if (opts.warmup > 0) await wrk(manifestUrl, { ...lo, duration: opts.warmup });
    const c = opts.connections;
    for (let i = 0; i < runs; i++) {
      try {
        recordLoad(results, LIMIT.nginxManifestGet, `nginx: manifest (${fx.manifest.size} B) GET`, `wrk, ${c} connections, static file`, await wrk(manifestUrl, lo));
        recordLoad(results, LIMIT.nginxManifestHead, 'nginx: manifest HEAD', `hey, ${c} connections, static file`, await hey(manifestUrl, 'HEAD', lo));
        recordLoad(results, LIMIT.nginxBlob4k, 'nginx: 4 KiB file GET', `wrk, ${c} connections, static file`, await wrk(blobUrl, lo));
      } catch (e) {
        results.limit(LIMIT.nginxManifestGet, 'nginx: manifest GET', 'req/s', '').error = errorText(e);
      }
    }
  } finally {
    await nginx.stop();
  }
}
