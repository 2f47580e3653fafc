/**
 * Disk full (issue 6). Two ways to fill a disk, one scenario:
 * - tmpfs: when running as root and `mount -t tmpfs` works, Berth stores on a real 48 MiB filesystem and the
 *   kernel answers ENOSPC;
 * - simulated: otherwise (and always, as it is cheap and exact), the fault wrapper answers ENOSPC to writes once
 *   the bytes under the storage root reach a capacity.
 * Scenario: push images; fill the disk with pushes and a ballast until pushes fail; every failure is a clear
 * `503 UNAVAILABLE` saying storage is full; no temporary file, half-written blob or partial upload data is left;
 * a chunked upload hit by ENOSPC keeps exactly its acknowledged bytes; earlier images pull intact; after space is
 * freed (ballast removed, images deleted) pushes succeed again.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultController, faultSeed, prng } from '../helpers/faulty-driver.ts';
import { pick, report } from './mode.ts';
import { call, newTally, ok } from './client.ts';
import { genuineErrors, settleOpenFiles, startFaultyBerth, walkFiles, watchProcess, type FaultyBerth } from './server.ts';
import { type AckedImage, type Env, makeBlob, pullImage, pushImage } from './workload.ts';

const MiB = 1024 * 1024;
const CAPACITY = pick(48, 128) * MiB;

function tryMountTmpfs(dir: string, bytes: number): string | undefined {
  if (process.getuid?.() !== 0) return 'not root';
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.error) return r.error.message;
  if (r.status !== 0) return `mount refused: ${(r.stderr || r.stdout).trim()}`;
  return undefined;
}

function umount(dir: string): void {
  spawnSync('umount', [dir]);
  // A busy mount (a descriptor still open) is detached lazily rather than left behind.
  spawnSync('umount', ['-l', dir]);
}

/** Bytes in use under `dir` as a filesystem counts them (whole 4 KiB pages), for the simulated disk. */
function usedBytes(dir: string): number {
  return walkFiles(dir).reduce((s, f) => s + Math.ceil(f.size / 4096) * 4096, 0);
}

interface Figures {
  path: string;
  imagesBefore: number;
  pushesUntilFull: number;
  failedPushes: number;
  failures: Record<string, number>;
  ballastMiB: number;
  leftovers: number;
  pushesAfterFree: number;
  requests: number;
  durationMs: number;
}

/** The scenario, over a Berth whose storage root is `root` on a disk of `capacity` bytes. */
async function scenario(label: string, berth: FaultyBerth, root: string, capacity: number, freeBallast: () => void, writeBallast: (bytes: number) => number): Promise<Figures> {
  const started = Date.now();
  const tally = newTally();
  const rand = prng(7);
  const acknowledged = new Map<string, number>();
  const strict: Env = { base: berth.url, tally, timeoutMs: 60_000, faulty: false, rand, acknowledged };
  // While the disk is full, 503s are legitimate; nothing else is (timeouts included: this is not a hang).
  const full: Env = { ...strict, faulty: true };

  // 1. Some images while there is room.
  const before: AckedImage[] = [];
  for (let i = 0; i < 4; i++) {
    const img = await pushImage(strict, 'full/base', `v${i}`, [makeBlob(4096 + i), makeBlob(600 * 1024 + i)]);
    assert.ok(img, `${label}: push ${i} failed with room left: ${tally.unexpected.join('; ')}`);
    before.push(img);
  }
  assert.deepEqual(tally.unexpected, []);

  // 2. A ballast leaves a few MiB, then pushes of 1.5 MiB layers until one fails.
  const ballast = writeBallast(capacity - usedBytes(root) - 6 * MiB);
  const filling: AckedImage[] = [];
  let failedAt = -1;
  let n = 0;
  for (; n < 40 && failedAt < 0; n++) {
    const img = await pushImage(full, `full/fill${n % 3}`, `f${n}`, [makeBlob(1536 * 1024)]);
    if (img) filling.push(img);
    else failedAt = n;
  }
  assert.ok(failedAt >= 0, `${label}: pushes never failed on a full disk`);
  assert.deepEqual(tally.unexpected, [], `${label}: unexpected answers while filling`);
  const other5xx = Object.keys(tally.statuses).filter((k) => /^5/.test(k) && k !== '503 UNAVAILABLE');
  assert.deepEqual(other5xx, [], `${label}: a full disk answered other than 503 UNAVAILABLE`);
  const uploadsIn = (repo: string): string[] => walkFiles(root).filter((f) => f.path.includes(`/repositories/${repo}/_uploads/`)).map((f) => f.path);

  // 3. On the full disk: monolithic and chunked pushes fail with 503 UNAVAILABLE saying so.
  const failures: Record<string, number> = {};
  const expectFull = (what: string, o: Awaited<ReturnType<typeof call>>): void => {
    assert.ok(!o.network && !o.timeout && !o.truncated, `${label}: ${what}: ${o.network ?? 'timeout or truncated'}`);
    assert.equal(o.status, 503, `${label}: ${what}: ${o.status} ${o.body?.toString('utf8').slice(0, 200)}`);
    const err = (JSON.parse(o.body!.toString('utf8')) as { errors: Array<{ code: string; detail?: { reason?: string } }> }).errors[0]!;
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.detail?.reason ?? '', /storage is full/);
    failures[what] = (failures[what] ?? 0) + 1;
  };
  const big = makeBlob(8 * MiB);
  const mono = await call(tally, 'monolithic(full)', `${berth.url}/v2/full/new/blobs/uploads/?digest=${big.digest}`, { timeoutMs: 60_000, method: 'POST', body: big.data, success: [] });
  expectFull('monolithic', mono);
  assert.deepEqual(uploadsIn('full/new'), [], `${label}: a failed monolithic upload was left behind`);
  const head = await call(tally, 'head', `${berth.url}/v2/full/new/blobs/${big.digest}`, { timeoutMs: 60_000, method: 'HEAD', allow4xx: ['404 BLOB_UNKNOWN', '404 NAME_UNKNOWN'], success: [] });
  assert.equal(head.status, 404, `${label}: a blob that failed to push is visible`);

  // A chunked upload: one chunk acknowledged (small, it fits), then one too large for the room left.
  const start = await call(tally, 'start', `${berth.url}/v2/full/new/blobs/uploads/`, { timeoutMs: 60_000, method: 'POST', allow5xx: true, success: [202] });
  let chunkedChecked = false;
  if (ok(start, 202)) {
    const url = new URL(start.headers!.get('location')!, berth.url).href;
    const first = 16 * 1024;
    const p1 = await call(tally, 'patch', url, { timeoutMs: 60_000, method: 'PATCH', body: big.data.subarray(0, first), headers: { 'Content-Range': `0-${first - 1}` }, allow5xx: true, success: [202] });
    if (ok(p1, 202)) {
      const p2 = await call(tally, 'patch(full)', url, { timeoutMs: 60_000, method: 'PATCH', body: big.data.subarray(first), headers: { 'Content-Range': `${first}-${big.data.length - 1}` }, success: [] });
      expectFull('chunked', p2);
      const st = await call(tally, 'status', url, { timeoutMs: 60_000, allow4xx: ['404 BLOB_UPLOAD_UNKNOWN'], success: [204] });
      if (st.status === 204) assert.equal(st.headers?.get('range'), `0-${first - 1}`, `${label}: the upload kept unacknowledged bytes`);
      const id = url.split('?')[0]!.split('/').pop()!;
      const data = walkFiles(root).find((f) => f.path.endsWith(`_uploads/${id}/data`));
      if (data) assert.equal(data.size, first, `${label}: upload data holds ${data.size} bytes, ${first} acknowledged`);
      chunkedChecked = true;
    } else {
      expectFull('chunk', p1);
    }
  } else {
    expectFull('upload start', start);
  }

  // 4. Nothing half-written is left: no temporary files, no blob data that is not its digest's bytes, no upload
  // holding bytes nobody acknowledged.
  const files = walkFiles(root);
  const leftovers = files.filter((f) => f.path.endsWith('.tmp') || f.path.startsWith('.berth-tmp/'));
  assert.deepEqual(leftovers, [], `${label}: temporary files left behind`);
  // An upload abandoned after some acknowledged chunks keeps exactly those bytes (it may be resumed).
  const uploadData = files.filter((f) => {
    const m = /\/_uploads\/([^/]+)\/data$/.exec(f.path);
    return m && f.size > 0 && !(chunkedChecked && f.size === 16 * 1024) && acknowledged.get(m[1]!) !== f.size;
  });
  assert.deepEqual(uploadData, [], `${label}: failed uploads left unacknowledged data behind`);
  const blobDirs = files.filter((f) => f.path.includes('/blobs/sha256/'));
  assert.ok(blobDirs.every((f) => f.path.endsWith('/data')), `${label}: stray files under blobs/`);

  // 5. Existing images pull intact while the disk is full.
  for (const img of [...before, ...filling]) assert.ok(await pullImage(strict, img), `${label}: ${img.repo}:${img.tag} does not pull on a full disk`);

  // 6. Free space: the ballast goes, and the filling images are deleted; pushes succeed again.
  freeBallast();
  for (const img of filling) {
    const d = await call(tally, 'delete', `${berth.url}/v2/${img.repo}/manifests/${img.digest}`, { timeoutMs: 60_000, method: 'DELETE', success: [202] });
    assert.equal(d.status, 202);
  }
  let pushesAfterFree = 0;
  for (let i = 0; i < 3; i++) {
    const img = await pushImage(strict, 'full/after', `a${i}`, [makeBlob(2 * MiB + i)]);
    assert.ok(img, `${label}: push after freeing space failed: ${tally.unexpected.join('; ')}`);
    assert.ok(await pullImage(strict, img));
    pushesAfterFree++;
  }
  for (const img of before) assert.ok(await pullImage(strict, img), `${label}: ${img.repo}:${img.tag} damaged`);
  assert.deepEqual(tally.unexpected, []);
  assert.deepEqual(await settleOpenFiles(root), [], `${label}: descriptors left open`);
  assert.deepEqual(genuineErrors(berth.logs), [], `${label}: errors logged that a full disk does not explain`);
  return {
    path: label,
    imagesBefore: before.length,
    pushesUntilFull: failedAt,
    failedPushes: Object.values(failures).reduce((a, b) => a + b, 0),
    failures,
    ballastMiB: Math.round(ballast / MiB),
    leftovers: leftovers.length,
    pushesAfterFree,
    requests: tally.requests,
    durationMs: Date.now() - started,
  };
}

describe('disk full', () => {
  const watch = watchProcess();
  const cleanups: Array<() => Promise<void> | void> = [];
  after(async () => {
    watch.stop();
    for (const c of cleanups.reverse()) await c();
  });

  test('on a real small filesystem (tmpfs, when root may mount one)', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-tmpfs-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const why = tryMountTmpfs(dir, CAPACITY);
    if (why) {
      console.log(`disk-full: tmpfs path skipped (${why}); the simulated path runs instead`);
      t.skip(why);
      return;
    }
    cleanups.push(() => umount(dir));
    console.log(`disk-full: tmpfs path runs on a ${CAPACITY / MiB} MiB tmpfs at ${dir}`);
    const root = join(dir, 'data');
    const faults = new FaultController(1); // never switched on: the kernel supplies the ENOSPC
    const berth = await startFaultyBerth(root, faults);
    cleanups.push(() => berth.running.close());
    const ballastFile = join(dir, 'ballast');
    const figures = await scenario(
      'tmpfs',
      berth,
      root,
      CAPACITY,
      () => rmSync(ballastFile, { force: true }),
      (bytes) => {
        const n = Math.max(0, Math.floor(bytes / MiB)) * MiB;
        writeFileSync(ballastFile, Buffer.alloc(n, 1));
        return n;
      },
    );
    report('disk-full', { ...figures });
    assert.deepEqual(watch.problems, []);
  });

  test('on a simulated full disk (fault wrapper answering ENOSPC past a capacity)', async () => {
    const seed = faultSeed('disk-full');
    const dir = mkdtempSync(join(tmpdir(), 'berth-simfull-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    console.log(`disk-full: simulated path runs with a ${CAPACITY / MiB} MiB capacity`);
    const root = join(dir, 'data');
    mkdirSync(root, { recursive: true });
    const faults = new FaultController(seed);
    let ballast = 0;
    faults.setCapacity({ bytes: CAPACITY, used: () => usedBytes(root) + ballast });
    const berth = await startFaultyBerth(root, faults);
    cleanups.push(() => berth.running.close());
    const figures = await scenario(
      'simulated',
      berth,
      root,
      CAPACITY,
      () => {
        ballast = 0;
      },
      (bytes) => (ballast = Math.max(0, bytes)),
    );
    report('disk-full', { ...figures, enospcInjected: faults.byKind() });
    assert.deepEqual(watch.problems, []);
  });
});
