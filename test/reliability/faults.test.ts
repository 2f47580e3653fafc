/**
 * Storage faults (issue 6): Berth in-process over the filesystem driver wrapped in a fault injector. Phase 1
 * pushes images cleanly; phase 2 switches random faults on (errors before and after effects, streams broken
 * part-way, hangs) while concurrent clients push, pull, list, mount and delete; phase 3 switches them off and
 * checks that every image and blob acknowledged in either phase pulls intact, that pushes work again, that no
 * descriptor or temporary file was left behind, and that every error Berth logged came from an injected fault.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultController, faultSeed, prng } from '../helpers/faulty-driver.ts';
import { pick, report } from './mode.ts';
import { call, newTally, ok } from './client.ts';
import { genuineErrors, settleOpenFiles, startFaultyBerth, walkFiles, watchProcess, type FaultyBerth } from './server.ts';
import { type AckedImage, type BlobData, type Env, makeBlob, pullBlob, pullImage, pushImage } from './workload.ts';

const CLIENTS = pick(16, 32);
const PHASE1_IMAGES = pick(6, 24);
const FAULT_MS = pick(12_000, 180_000);
const MAX_OPS_PER_CLIENT = pick(40, 100_000);
const TIMEOUT_MS = pick(4_000, 8_000);

describe('storage faults', () => {
  const seed = faultSeed('faults');
  const faults = new FaultController(seed);
  const tmp = mkdtempSync(join(tmpdir(), 'berth-faults-'));
  const root = join(tmp, 'data');
  let berth: FaultyBerth;
  const watch = watchProcess();

  before(async () => {
    berth = await startFaultyBerth(root, faults);
  });

  after(async () => {
    faults.off();
    watch.stop();
    await berth?.running.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('acknowledged images survive random storage faults, and every failure is a clean OCI error', async () => {
    const started = Date.now();
    const tally = newTally();
    const env = (rand: () => number, faulty: boolean, timeoutMs = TIMEOUT_MS): Env => ({
      base: berth.url,
      tally,
      timeoutMs,
      faulty,
      rand,
      onResumeMismatch: (d) => tally.unexpected.push(`upload kept unacknowledged bytes: ${d}`),
    });
    const acked: AckedImage[] = [];
    /** Blobs acknowledged (201) into a repository, by `repo@digest`, minus those whose deletion was attempted. */
    const ackedBlobs = new Map<string, { repo: string; blob: BlobData }>();
    const base = makeBlob(100 * 1024);

    // Phase 1: clean pushes.
    const e1 = env(prng(seed), false, 60_000);
    for (let i = 0; i < PHASE1_IMAGES; i++) {
      const repo = `p1/r${i % 3}`;
      const img = await pushImage(e1, repo, `v${i}`, [base, makeBlob(1024 + i), makeBlob(150 * 1024 + i)]);
      assert.ok(img, `phase 1 push ${i} failed: ${tally.unexpected.join('\n')}`);
      acked.push(img);
    }
    assert.deepEqual(tally.unexpected, []);
    const phase1 = [...acked];

    // Phase 2: faults on, concurrent clients.
    faults.on({
      rates: { getContent: 0.02, putContent: 0.03, reader: 0.1, writer: 0.06, stat: 0.02, list: 0.04, move: 0.06, delete: 0.06, sendTo: 0.06 },
      kinds: { EIO: 3, ENOSPC: 1, ETIMEDOUT: 2, Error: 2, hang: 0.4 },
      after: 0.3,
    });
    const deadline = Date.now() + FAULT_MS;
    let deletes = 0;
    let mounts = 0;
    let pullsComplete = 0;
    const client = async (i: number): Promise<void> => {
      const rand = prng((seed ^ Math.imul(i + 1, 0x9e3779b9)) >>> 0);
      const e = env(rand, true);
      const repo = `p2/c${i}`;
      const mine: AckedImage[] = [];
      let hadManifest = false;
      let baseMounted = false;
      for (let k = 0; k < MAX_OPS_PER_CLIENT && Date.now() < deadline; k++) {
        const x = rand();
        if (x < 0.4) {
          const layers = [makeBlob(1 + Math.floor(rand() * 40 * 1024)), makeBlob(70 * 1024 + Math.floor(rand() * 300 * 1024))];
          if (rand() < 0.5) layers.unshift(base);
          // Now and then a layer larger than the socket buffers, so a storage failure strikes mid-body.
          if (rand() < 0.15) layers.push(makeBlob(1024 * 1024 + Math.floor(rand() * 2 * 1024 * 1024)));
          const img = await pushImage(e, repo, `t${k}`, layers, (b) => ackedBlobs.set(`${repo}@${b.digest}`, { repo, blob: b }));
          if (img) {
            mine.push(img);
            acked.push(img);
            hadManifest = true;
          }
        } else if (x < 0.65) {
          const pool = rand() < 0.5 && mine.length > 0 ? mine : phase1;
          const img = pool[Math.floor(rand() * pool.length)]!;
          if (await pullImage(e, img, rand() < 0.3, rand() < 0.2)) pullsComplete++;
        } else if (x < 0.75) {
          const own = rand() < 0.6;
          const r = own ? repo : phase1[Math.floor(rand() * phase1.length)]!.repo;
          const allow = own && !hadManifest ? ['404 NAME_UNKNOWN'] : [];
          const o = await call(tally, 'tags.list', `${berth.url}/v2/${r}/tags/list`, { timeoutMs: TIMEOUT_MS, allow4xx: allow, success: [200] });
          if (ok(o, 200)) {
            const tags = (JSON.parse(o.body!.toString('utf8')) as { tags: string[] }).tags;
            for (const img of own ? mine : phase1.filter((p) => p.repo === r)) {
              if (!tags.includes(img.tag)) tally.unexpected.push(`tags of ${r} lack acknowledged ${img.tag}`);
            }
          }
        } else if (x < 0.8) {
          const o = await call(tally, 'catalog', `${berth.url}/v2/_catalog`, { timeoutMs: TIMEOUT_MS, success: [200] });
          if (ok(o, 200)) {
            const repos = (JSON.parse(o.body!.toString('utf8')) as { repositories: string[] }).repositories;
            for (const r of new Set([...phase1.map((p) => p.repo), ...(mine.length > 0 ? [repo] : [])])) {
              if (!repos.includes(r)) tally.unexpected.push(`catalog lacks ${r}`);
            }
          }
        } else if (x < 0.85) {
          const from = phase1[0]!.repo;
          const o = await call(tally, 'blob.mount', `${berth.url}/v2/${repo}/blobs/uploads/?mount=${base.digest}&from=${from}`, { timeoutMs: TIMEOUT_MS, method: 'POST', success: [201] });
          if (ok(o, 201)) {
            mounts++;
            baseMounted = true;
            ackedBlobs.set(`${repo}@${base.digest}`, { repo, blob: base });
          }
          if (baseMounted && rand() < 0.5) await pullBlob(e, repo, base);
        } else if (mine.length > 0) {
          // Delete one of my images: its manifest, then its last (unique) layer. Neither is acknowledged any more.
          const img = mine.splice(Math.floor(rand() * mine.length), 1)[0]!;
          acked.splice(acked.indexOf(img), 1);
          const layer = img.blobs[img.blobs.length - 1]!;
          ackedBlobs.delete(`${repo}@${layer.digest}`);
          deletes++;
          const d = await call(tally, 'manifest.delete', `${berth.url}/v2/${repo}/manifests/${img.digest}`, { timeoutMs: TIMEOUT_MS, method: 'DELETE', success: [202] });
          if (ok(d, 202)) {
            await call(tally, 'manifest.get(deleted)', `${berth.url}/v2/${repo}/manifests/${img.digest}`, { timeoutMs: TIMEOUT_MS, allow4xx: ['404 MANIFEST_UNKNOWN'], success: [] });
          }
          await call(tally, 'blob.delete', `${berth.url}/v2/${repo}/blobs/${layer.digest}`, { timeoutMs: TIMEOUT_MS, method: 'DELETE', success: [202] });
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
    const hungAtEnd = faults.hangingNow;

    // Phase 3: faults off; everything acknowledged is intact.
    faults.off();
    const e3 = env(prng(seed + 3), false, 60_000);
    let imagesChecked = 0;
    for (const img of acked) {
      assert.ok(await pullImage(e3, img), `acknowledged image ${img.repo}:${img.tag} does not pull`);
      assert.ok(await pullImage(e3, img, true, true), `acknowledged image ${img.repo}@${img.digest} does not pull by digest`);
      imagesChecked++;
    }
    let blobsChecked = 0;
    for (const { repo, blob } of ackedBlobs.values()) {
      assert.ok(await pullBlob(e3, repo, blob), `acknowledged blob ${repo}@${blob.digest} does not pull`);
      blobsChecked++;
    }
    const fresh = await pushImage(e3, 'after/faults', 'v1', [makeBlob(2048), makeBlob(200 * 1024)]);
    assert.ok(fresh, 'a push after the faults stopped failed');
    assert.ok(await pullImage(e3, fresh));

    const open = await settleOpenFiles(root);
    const tmpFiles = walkFiles(root).filter((f) => f.path.endsWith('.tmp') || f.path.startsWith('.berth-tmp/'));
    const genuine = genuineErrors(berth.logs);
    const figures = {
      seed,
      clients: CLIENTS,
      requests: tally.requests,
      faultsInjected: faults.total(),
      faultsByKind: faults.byKind(),
      faultsByOp: faults.counts,
      hungAtEnd,
      statuses: tally.statuses,
      phase1Images: phase1.length,
      imagesChecked,
      blobsChecked,
      pullsComplete,
      mounts,
      deletes,
      durationMs: Date.now() - started,
    };
    report('faults', figures);
    assert.deepEqual(tally.unexpected, [], 'unexpected answers');
    assert.deepEqual(watch.problems, [], 'unhandled rejections or uncaught exceptions');
    assert.deepEqual(genuine, [], 'errors logged that no injected fault explains');
    assert.deepEqual(open, [], 'descriptors left open under the storage root');
    assert.deepEqual(tmpFiles, [], 'temporary files left behind');
    assert.ok(faults.total() > 50, `too few faults injected (${faults.total()})`);
    assert.ok(imagesChecked > PHASE1_IMAGES, 'no image was acknowledged during the fault phase');
  });

  test('a write failing mid-body is answered with a clean 503 and leaves only acknowledged upload bytes', async () => {
    const tally = newTally();
    const clean: Env = { base: berth.url, tally, timeoutMs: 60_000, faulty: false, rand: prng(seed) };
    const big = makeBlob(8 * 1024 * 1024);
    const post = { timeoutMs: 60_000, allow5xx: true, success: [] as number[] };
    for (const writerAt of ['stream', 'commit'] as const) {
      // Monolithic: the 8 MiB body is far larger than the socket buffers, so most of it is unread when the write fails.
      faults.on({ rates: { writer: 1 }, kinds: { EIO: 1 }, writerAt });
      const mono = await call(tally, 'monolithic', `${berth.url}/v2/mid/body/blobs/uploads/?digest=${big.digest}`, { ...post, method: 'POST', body: big.data });
      faults.off();
      assert.equal(mono.status, 503, `${writerAt}: ${mono.network ?? mono.code}`);
      assert.equal(mono.code, 'UNAVAILABLE');
      assert.equal((await call(tally, 'head', `${berth.url}/v2/mid/body/blobs/${big.digest}`, { timeoutMs: 60_000, method: 'HEAD', allow4xx: ['404 BLOB_UNKNOWN'], success: [] })).status, 404);

      // Chunked: one acknowledged chunk, then a failing one; the upload keeps exactly the first.
      const start = await call(tally, 'start', `${berth.url}/v2/mid/body/blobs/uploads/`, { timeoutMs: 60_000, method: 'POST', success: [202] });
      const url = `${berth.url}${new URL(start.headers!.get('location')!, berth.url).pathname}`;
      const first = 1024 * 1024;
      const p1 = await call(tally, 'patch', url, { timeoutMs: 60_000, method: 'PATCH', body: big.data.subarray(0, first), headers: { 'Content-Range': `0-${first - 1}` }, success: [202] });
      assert.equal(p1.status, 202);
      faults.on({ rates: { writer: 1 }, kinds: { EIO: 1 }, writerAt });
      const p2 = await call(tally, 'patch', url, { ...post, method: 'PATCH', body: big.data.subarray(first), headers: { 'Content-Range': `${first}-${big.data.length - 1}` } });
      faults.off();
      assert.equal(p2.status, 503, `${writerAt}: ${p2.network ?? p2.code}`);
      const st = await call(tally, 'status', url, { timeoutMs: 60_000, success: [204] });
      assert.equal(st.headers?.get('range'), `0-${first - 1}`, `${writerAt}: the upload holds unacknowledged bytes`);
      const id = url.split('/').pop()!;
      const data = walkFiles(root).find((f) => f.path.endsWith(`_uploads/${id}/data`));
      assert.equal(data?.size, first);
      const p3 = await call(tally, 'patch', url, { timeoutMs: 60_000, method: 'PATCH', body: big.data.subarray(first), headers: { 'Content-Range': `${first}-${big.data.length - 1}` }, success: [202] });
      assert.equal(p3.status, 202);
      const put = await call(tally, 'put', `${url}?digest=${big.digest}`, { timeoutMs: 60_000, method: 'PUT', success: [201] });
      assert.equal(put.status, 201);
      assert.ok(await pullBlob(clean, 'mid/body', big));
      assert.equal((await call(tally, 'delete', `${berth.url}/v2/mid/body/blobs/${big.digest}`, { timeoutMs: 60_000, method: 'DELETE', success: [202] })).status, 202);
    }
    assert.deepEqual(tally.unexpected, []);
    assert.deepEqual(await settleOpenFiles(root), []);
  });
});
