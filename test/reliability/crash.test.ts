/**
 * Crash safety: round after round, 16 clients push blobs (monolithic, POST+PUT, chunked) and manifests while the
 * server is SIGKILLed at a random moment and restarted on the same storage. After every restart:
 * - the server starts with no repair;
 * - every manifest acknowledged with 201 is served byte for byte, by digest and by its tag, and parses, and
 *   every blob it references exists with its size;
 * - every blob acknowledged with 201 is served and hashes to its digest, and every blob data file in the
 *   storage tree hashes to the digest its path names (so no temporary or partial file can ever be served);
 * - every chunked upload cut off by the kill is either cleanly unknown (404 BLOB_UPLOAD_UNKNOWN) or reports an
 *   offset at or past its last acknowledged one (never past what was sent), and resumes from there to a
 *   verified blob.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { freePort, startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { OCI_INDEX, OCI_MANIFEST, errorCode, sha256 } from '../helpers/oci.ts';
import { pick, report } from './mode.ts';

const ROUNDS = pick(20, 100);
const CLIENTS = 16;
/** The kill comes this long after the clients start (uniformly random). */
const KILL_AFTER_MS: [number, number] = pick([150, 1800], [150, 5000]);

interface AckedBlob {
  repo: string;
  digest: string;
  size: number;
}
interface AckedManifest {
  repo: string;
  tag: string;
  digest: string;
  body: Buffer;
  mediaType: string;
  refs: AckedBlob[];
}
interface OpenUpload {
  repo: string;
  location: string;
  data: Buffer;
  /** Bytes acknowledged by a 202 (the Range end + 1 the registry last reported). */
  acked: number;
  /** Bytes sent so far (acknowledged or not). */
  sent: number;
  /** The completing PUT was sent. */
  completing: boolean;
}

const stats = {
  rounds: 0,
  requests: 0,
  networkErrors: 0,
  blobsAcked: 0,
  manifestsAcked: 0,
  manifestsChecked: 0,
  blobFilesHashed: 0,
  uploadsInterrupted: 0,
  uploadsResumed: 0,
  uploadsUnknownAfterCrash: 0,
  uploadsAheadOfAck: 0,
  startMs: 0,
  loadMs: 0,
  verifyMs: 0,
};

async function call(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; body: Buffer }> {
  stats.requests++;
  const r = await fetch(url, { redirect: 'manual', ...init });
  return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
}

function randomBlob(): Buffer {
  const r = Math.random();
  const size = r < 0.3 ? randomInt(1, 2048) : r < 0.9 ? randomInt(2048, 128 * 1024) : randomInt(128 * 1024, 1024 * 1024);
  return randomBytes(size);
}

/** One client's work until `stop` is set: every success is recorded only once its 201 (or 202) arrived. */
async function client(base: string, id: number, round: number, stop: { now: boolean }, acked: { blobs: AckedBlob[]; manifests: AckedManifest[] }, open: OpenUpload[]): Promise<void> {
  const repo = `crash/client-${id}`;
  const mine: AckedBlob[] = acked.blobs.filter((b) => b.repo === repo);
  const myManifests: AckedManifest[] = acked.manifests.filter((m) => m.repo === repo && m.mediaType === OCI_MANIFEST);
  let n = 0;
  while (!stop.now) {
    n++;
    const op = Math.random();
    try {
      if (op < 0.45 || mine.length < 2) {
        const data = randomBlob();
        const digest = sha256(data);
        if (Math.random() < 0.5) {
          const r = await call(`${base}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
          assert.equal(r.status, 201, r.body.toString());
        } else {
          const s = await call(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
          assert.equal(s.status, 202, s.body.toString());
          const u = new URL(s.headers.get('location')!, base);
          u.searchParams.set('digest', digest);
          const r = await call(u.toString(), { method: 'PUT', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
          assert.equal(r.status, 201, r.body.toString());
        }
        const b = { repo, digest, size: data.length };
        acked.blobs.push(b);
        mine.push(b);
        stats.blobsAcked++;
      } else if (op < 0.7) {
        const data = randomBytes(randomInt(16 * 1024, 768 * 1024));
        const s = await call(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
        assert.equal(s.status, 202, s.body.toString());
        const up: OpenUpload = { repo, location: new URL(s.headers.get('location')!, base).toString(), data, acked: 0, sent: 0, completing: false };
        open.push(up);
        const chunks = randomInt(2, 6);
        const step = Math.ceil(data.length / chunks);
        for (let off = 0; off < data.length; off += step) {
          const end = Math.min(off + step, data.length);
          up.sent = end;
          const r = await call(up.location, {
            method: 'PATCH',
            body: data.subarray(off, end),
            headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${off}-${end - 1}` },
          });
          assert.equal(r.status, 202, r.body.toString());
          assert.equal(r.headers.get('range'), `0-${end - 1}`);
          up.acked = end;
          up.location = new URL(r.headers.get('location')!, base).toString();
          if (stop.now) return;
        }
        const u = new URL(up.location);
        u.searchParams.set('digest', sha256(data));
        up.completing = true;
        const r = await call(u.toString(), { method: 'PUT' });
        assert.equal(r.status, 201, r.body.toString());
        open.splice(open.indexOf(up), 1);
        const b = { repo, digest: sha256(data), size: data.length };
        acked.blobs.push(b);
        mine.push(b);
        stats.blobsAcked++;
      } else if (op < 0.93 || myManifests.length < 2) {
        const picked = [...mine].sort(() => Math.random() - 0.5).slice(0, randomInt(2, Math.min(5, mine.length) + 1));
        const [config, ...layers] = picked as [AckedBlob, ...AckedBlob[]];
        const manifest = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
          layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: l.digest, size: l.size })),
          annotations: { round: String(round), n: String(n) },
        };
        const body = Buffer.from(JSON.stringify(manifest));
        const tag = `r${round}-n${n}`;
        const r = await call(`${base}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body, headers: { 'Content-Type': OCI_MANIFEST } });
        assert.equal(r.status, 201, r.body.toString());
        const m = { repo, tag, digest: sha256(body), body, mediaType: OCI_MANIFEST, refs: picked };
        acked.manifests.push(m);
        myManifests.push(m);
        stats.manifestsAcked++;
      } else {
        const children = [...myManifests].sort(() => Math.random() - 0.5).slice(0, 3);
        const index = {
          schemaVersion: 2,
          mediaType: OCI_INDEX,
          manifests: children.map((c) => ({ mediaType: OCI_MANIFEST, digest: c.digest, size: c.body.length })),
        };
        const body = Buffer.from(JSON.stringify(index));
        const tag = `idx-r${round}-n${n}`;
        const r = await call(`${base}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body, headers: { 'Content-Type': OCI_INDEX } });
        assert.equal(r.status, 201, r.body.toString());
        acked.manifests.push({ repo, tag, digest: sha256(body), body, mediaType: OCI_INDEX, refs: [] });
        stats.manifestsAcked++;
      }
    } catch (e) {
      // Once the server is killed, in-flight requests fail: not acknowledged, nothing recorded.
      if (stop.now || (e as Error).name === 'TypeError') {
        stats.networkErrors++;
        return;
      }
      throw e;
    }
  }
}

function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  return pipeline(createReadStream(path), h).then(() => h.digest('hex'));
}

/** Hashes every blob data file not verified before; each must hash to the digest its path names. */
async function verifyBlobFiles(root: string, verified: Set<string>): Promise<void> {
  const dir = join(root, 'docker/registry/v2/blobs/sha256');
  if (!existsSync(dir)) return;
  for (const two of readdirSync(dir)) {
    for (const hex of readdirSync(join(dir, two))) {
      if (verified.has(hex)) continue;
      const entries = readdirSync(join(dir, two, hex));
      // Only `data` ever lives here: a temporary name in a blob directory would be a leak.
      for (const e of entries) assert.ok(e === 'data', `unexpected ${e} in blob directory ${hex}`);
      if (!entries.includes('data')) continue;
      assert.equal(await hashFile(join(dir, two, hex, 'data')), hex, `blob file ${hex} does not hash to its name`);
      verified.add(hex);
      stats.blobFilesHashed++;
    }
  }
}

async function verifyManifest(base: string, m: AckedManifest): Promise<void> {
  const byDigest = await call(`${base}/v2/${m.repo}/manifests/${m.digest}`, { headers: { Accept: m.mediaType } });
  assert.equal(byDigest.status, 200, `acknowledged manifest ${m.repo}@${m.digest}: ${byDigest.status} ${byDigest.body.toString()}`);
  assert.ok(byDigest.body.equals(m.body), 'manifest bytes changed');
  JSON.parse(byDigest.body.toString());
  const byTag = await call(`${base}/v2/${m.repo}/manifests/${m.tag}`, { method: 'HEAD', headers: { Accept: m.mediaType } });
  assert.equal(byTag.status, 200, `acknowledged tag ${m.repo}:${m.tag}`);
  assert.equal(byTag.headers.get('docker-content-digest'), m.digest);
  for (const b of m.refs) {
    const h = await call(`${base}/v2/${m.repo}/blobs/${b.digest}`, { method: 'HEAD' });
    assert.equal(h.status, 200, `blob ${b.digest} of acknowledged manifest ${m.digest}`);
    assert.equal(Number(h.headers.get('content-length')), b.size);
  }
  stats.manifestsChecked++;
}

async function verifyBlob(base: string, b: AckedBlob): Promise<void> {
  const r = await call(`${base}/v2/${b.repo}/blobs/${b.digest}`);
  assert.equal(r.status, 200, `acknowledged blob ${b.repo}@${b.digest}: ${r.status}`);
  assert.equal(sha256(r.body), b.digest);
}

/** An upload cut off by the kill: cleanly unknown, or resumable from an offset in [acked, sent]. */
async function resumeUpload(base: string, up: OpenUpload): Promise<void> {
  const st = await call(up.location);
  if (st.status === 404) {
    // Only an upload whose completion was under way may be gone: an acknowledged session is never lost.
    assert.equal(errorCode(st.body), 'BLOB_UPLOAD_UNKNOWN');
    assert.ok(up.completing, `upload with ${up.acked} acknowledged bytes vanished in the crash`);
    stats.uploadsUnknownAfterCrash++;
    return;
  }
  assert.equal(st.status, 204, st.body.toString());
  const range = /^0-(\d+)$/.exec(st.headers.get('range') ?? '');
  const offset = range ? Number(range[1]) + 1 : 0;
  if (offset === 1 && up.acked === 0) {
    // `0-0` means 0 or 1 byte (distribution's convention, kept for compatibility). Sending the first byte
    // settles it: accepted when the upload was empty, refused as out of order when that byte was already kept.
    const first = await call(up.location, { method: 'PATCH', body: up.data.subarray(0, 1), headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': '0-0' } });
    assert.ok(first.status === 202 || (first.status === 416 && errorCode(first.body) === 'RANGE_INVALID'), first.body.toString());
  }
  assert.ok(offset >= up.acked, `upload reports ${offset} bytes, below the ${up.acked} acknowledged`);
  assert.ok(offset <= up.sent, `upload reports ${offset} bytes, more than the ${up.sent} sent`);
  if (offset > up.acked) stats.uploadsAheadOfAck++;
  let location = new URL(st.headers.get('location') ?? up.location, base);
  if (offset < up.data.length) {
    const r = await call(location.toString(), {
      method: 'PATCH',
      body: up.data.subarray(offset),
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${up.data.length - 1}` },
    });
    assert.equal(r.status, 202, r.body.toString());
    location = new URL(r.headers.get('location')!, base);
  }
  const digest = sha256(up.data);
  location.searchParams.set('digest', digest);
  // The bytes kept across the crash are exactly a prefix of what was sent: the digest check proves it.
  const done = await call(location.toString(), { method: 'PUT' });
  assert.equal(done.status, 201, `resumed upload: ${done.status} ${done.body.toString()}`);
  await verifyBlob(base, { repo: up.repo, digest, size: up.data.length });
  stats.uploadsResumed++;
}

describe('reliability: SIGKILL at random moments under 16 pushing clients', { timeout: pick(600_000, 3_600_000) }, () => {
  let tmp: string;
  let port: number;
  let reg: RunningRegistry | undefined;
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'berth-crash-'));
    port = await freePort();
  });
  after(async () => {
    await reg?.stop({ signal: 'SIGKILL' });
    rmSync(tmp, { recursive: true, force: true });
    report('crash', { ...stats, clients: CLIENTS });
  });

  it(`${ROUNDS} rounds: acknowledged data survives, nothing partial is served, uploads resume`, { timeout: pick(600_000, 3_600_000) }, async () => {
    const root = join(tmp, 'data');
    const acked = { blobs: [] as AckedBlob[], manifests: [] as AckedManifest[] };
    const verified = new Set<string>();
    let pending: { blobsFrom: number; manifestsFrom: number; open: OpenUpload[] } | undefined;
    for (let round = 1; round <= ROUNDS + 1; round++) {
      // (Re)start on the same storage: it must come up with no repair.
      let t = Date.now();
      reg = await startBerth({ root, port });
      stats.startMs += Date.now() - t;
      t = Date.now();
      const base = reg.url;
      if (pending) {
        await verifyBlobFiles(root, verified);
        for (const b of acked.blobs.slice(pending.blobsFrom)) await verifyBlob(base, b);
        // The last round's manifests, and a sample of everything acknowledged earlier.
        const earlier = acked.manifests.slice(0, pending.manifestsFrom).sort(() => Math.random() - 0.5).slice(0, 40);
        for (const m of [...acked.manifests.slice(pending.manifestsFrom), ...earlier]) await verifyManifest(base, m);
        for (const up of pending.open) await resumeUpload(base, up);
        const catalog = await call(`${base}/v2/_catalog`);
        assert.equal(catalog.status, 200);
        stats.rounds = round - 1;
      }
      stats.verifyMs += Date.now() - t;
      t = Date.now();
      if (round > ROUNDS) break;
      const stop = { now: false };
      pending = { blobsFrom: acked.blobs.length, manifestsFrom: acked.manifests.length, open: [] };
      const clients = Array.from({ length: CLIENTS }, (_, i) => client(base, i, round, stop, acked, pending!.open));
      await new Promise((r) => setTimeout(r, randomInt(KILL_AFTER_MS[0], KILL_AFTER_MS[1])));
      stop.now = true;
      await reg.stop({ signal: 'SIGKILL' });
      await Promise.all(clients);
      stats.uploadsInterrupted += pending.open.length;
      stats.loadMs += Date.now() - t;
    }
    // A final full pass over everything acknowledged in all rounds.
    for (const m of acked.manifests) await verifyManifest(reg!.url, m);
    assert.ok(stats.manifestsAcked > ROUNDS, `too little work got through: ${stats.manifestsAcked} manifests`);
    assert.ok(stats.uploadsInterrupted > 0, 'no chunked upload was ever cut off by a kill');
  });
});
