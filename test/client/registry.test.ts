/**
 * berth/client against real registries over HTTP: an in-process Berth (startTestRegistry, filesystem storage)
 * and Debian's docker-registry (distribution 2.8). The same scenarios run on both: a multi-layer image index
 * pushed and read back with identical digests, pagination, ranged and verified blob reads (a tampered blob
 * file must fail), a chunked push resumed after the connection is cut, mounts, referrers (API or tag-schema
 * fallback), manifest delete and upload cancel.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { DigestMismatchError, MediaType, RegistryClient, RegistryError, type Descriptor } from '../../src/client/index.ts';
import { startTestRegistry, type TestRegistry } from '../../src/testing/index.ts';
import { startDistribution, type RunningRegistry } from '../helpers/servers.ts';
import { OciLayout, addIndex, generateBytes, MT } from '../helpers/images.ts';
import { startCutProxy } from '../helpers/cut-proxy.ts';

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function hashStream(s: NodeJS.ReadableStream): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  await pipeline(
    s,
    new Writable({
      write(c: Buffer, _e, cb) {
        h.update(c);
        size += c.length;
        cb();
      },
    }),
  );
  return { digest: `sha256:${h.digest('hex')}`, size };
}

interface Target {
  url: string;
  root: string;
  hasReferrersApi: boolean;
  stop(): Promise<void>;
}

const targets: Array<[string, () => Promise<Target>]> = [
  [
    'berth',
    async () => {
      const r: TestRegistry = await startTestRegistry({ storage: 'filesystem' });
      return { url: r.url, root: r.root!, hasReferrersApi: true, stop: () => r.close() };
    },
  ],
  [
    'distribution',
    async () => {
      const r: RunningRegistry = await startDistribution();
      return { url: r.url, root: r.root, hasReferrersApi: false, stop: async () => void (await r.stop()) };
    },
  ],
];

let tmp: string;
let layout: OciLayout;
let index: ReturnType<typeof addIndex>;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'berth-client-'));
  layout = new OciLayout(join(tmp, 'layout'));
  index = addIndex(layout, { layers: 3, layerSize: 200_000, seed: 'client-test' });
});
after(() => rmSync(tmp, { recursive: true, force: true }));

for (const [name, start] of targets) {
  describe(`client against ${name}`, () => {
    let t: Target;
    let c: RegistryClient;
    before(async () => {
      t = await start();
      c = new RegistryClient({ registry: t.url, credentials: 'none', retry: { baseDelayMs: 20 } });
    });
    after(async () => {
      c?.close();
      await t?.stop();
    });

    test('push a multi-layer image index and read it back with identical digests', async () => {
      const repo = 'team/app';
      for (const img of index.images) {
        for (const d of [...img.layers.map((l) => l.desc), img.config]) {
          // Alternate the source kinds: a re-openable file factory and bytes.
          const path = layout.blobPath(d.digest);
          const r = d === img.config ? await c.pushBlob(repo, readFileSync(path)) : await c.pushBlob(repo, (off) => createReadStream(path, { start: off }), { digest: d.digest, size: d.size });
          assert.equal(r.digest, d.digest);
          assert.ok(r.outcome === 'uploaded' || r.outcome === 'exists');
        }
        const put = await c.putManifest(repo, img.digest, img.manifest, { mediaType: img.mediaType });
        assert.equal(put.digest, img.digest);
      }
      const put = await c.putManifest(repo, 'v1', index.manifest, { mediaType: index.mediaType });
      assert.equal(put.digest, index.digest);

      const got = await c.getManifest(repo, 'v1');
      assert.equal(got.digest, index.digest);
      assert.equal(got.mediaType, MT.ociIndex);
      assert.deepEqual(got.bytes, index.manifest);
      const head = await c.headManifest(repo, 'v1');
      assert.equal(head?.digest, index.digest);
      assert.equal(head?.size, index.manifest.length);
      for (const img of index.images) {
        const m = await c.getManifest(repo, img.digest);
        assert.deepEqual(m.bytes, img.manifest);
        for (const d of [...img.layers.map((l) => l.desc), img.config]) {
          const dl = await c.getBlob(repo, d.digest);
          assert.equal(dl.length, d.size);
          assert.deepEqual(await hashStream(dl.stream), { digest: d.digest, size: d.size });
          assert.equal((await c.headBlob(repo, d.digest))?.size, d.size);
        }
      }
      // Pushing again sends no bytes: every blob is found by HEAD.
      const again = await c.pushBlob(repo, readFileSync(layout.blobPath(index.images[0]!.config.digest)));
      assert.equal(again.outcome, 'exists');
      assert.equal(await c.headManifest(repo, 'nope'), undefined);
      await assert.rejects(c.getManifest(repo, 'nope'), (e: RegistryError) => e instanceof RegistryError && e.status === 404 && e.code === 'MANIFEST_UNKNOWN' && e.method === 'GET');
    });

    test('tags and catalog follow pagination', async () => {
      const repo = 'paged/one';
      const cfg = Buffer.from('{}');
      await c.pushBlob(repo, cfg);
      const tags: string[] = [];
      for (let i = 0; i < 7; i++) {
        const m = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciEmpty, digest: sha256(cfg), size: 2 }, layers: [], annotations: { i: String(i) } };
        const tag = `t${i}`;
        tags.push(tag);
        await c.putManifest(repo, tag, m);
      }
      for (const extra of ['paged/two', 'paged/three']) await c.pushBlob(extra, cfg).then(() => c.putManifest(extra, 'x', { schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciEmpty, digest: sha256(cfg), size: 2 }, layers: [] }));
      const paged: string[] = [];
      for await (const x of c.tags(repo, { pageSize: 2 })) paged.push(x);
      assert.deepEqual(paged.sort(), tags.sort());
      const all: string[] = [];
      for await (const x of c.tags(repo)) all.push(x);
      assert.deepEqual(all.sort(), tags.sort());
      const repos: string[] = [];
      for await (const r of c.catalog({ pageSize: 1 })) repos.push(r);
      for (const r of ['paged/one', 'paged/two', 'paged/three']) assert.ok(repos.includes(r), `${r} in ${repos.join(',')}`);
      assert.equal(new Set(repos).size, repos.length);
    });

    test('ranged reads, and a tampered blob file fails digest verification', async () => {
      const repo = 'blobs/ranged';
      const data = generateBytes('ranged', 300_000);
      const r = await c.pushBlob(repo, data);
      const part = await c.getBlob(repo, r.digest, { range: { start: 1000, end: 1999 } });
      assert.equal(part.length, 1000);
      assert.equal(part.totalSize, data.length);
      const bytes = await buffer(part.stream);
      assert.equal(bytes.length, 1000);
      const tail = await c.getBlob(repo, r.digest, { range: { start: 299_990 } });
      const chunks: Buffer[] = [];
      for await (const x of tail.stream) chunks.push(x as Buffer);
      assert.deepEqual(Buffer.concat(chunks), data.subarray(299_990));
      const mid: Buffer[] = [];
      for await (const x of (await c.getBlob(repo, r.digest, { range: { start: 1000, end: 1999 } })).stream) mid.push(x as Buffer);
      assert.deepEqual(Buffer.concat(mid), data.subarray(1000, 2000));

      const hex = r.digest.slice('sha256:'.length);
      const file = join(t.root, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
      const bad = Buffer.from(data);
      bad[150_000] ^= 0xff;
      writeFileSync(file, bad);
      const dl = await c.getBlob(repo, r.digest);
      await assert.rejects(hashStream(dl.stream), (e: unknown) => e instanceof DigestMismatchError && e.expected === r.digest && e.actual === sha256(bad));
    });

    test('a chunked push resumes after the connection is cut mid-upload', async () => {
      const proxy = await startCutProxy(Number(new URL(t.url).port));
      const pc = new RegistryClient({ registry: proxy.url, credentials: 'none', chunkSize: 256 * 1024, monolithicThreshold: 0, retry: { baseDelayMs: 20 } });
      try {
        const data = generateBytes('resume', 1024 * 1024 + 12345);
        const file = join(tmp, `resume-${name}`);
        writeFileSync(file, data);
        let opened = 0;
        proxy.arm(600 * 1024);
        const r = await pc.pushBlob('resume/file', (off) => (opened++, createReadStream(file, { start: off })), { digest: sha256(data), size: data.length });
        assert.equal(proxy.cuts, 1);
        assert.ok(r.resumed >= 1, `resumed ${r.resumed}`);
        assert.ok(opened >= 2);
        assert.equal(r.outcome, 'uploaded');
        assert.deepEqual(await hashStream((await c.getBlob('resume/file', r.digest)).stream), { digest: sha256(data), size: data.length });

        // Bytes and an unknown digest: the digest is computed, the upload resumed the same way.
        const data2 = generateBytes('resume2', 900 * 1024);
        proxy.arm(500 * 1024);
        const r2 = await pc.pushBlob('resume/bytes', data2);
        assert.equal(proxy.cuts, 2);
        assert.ok(r2.resumed >= 1);
        assert.equal(r2.digest, sha256(data2));
        assert.equal((await c.headBlob('resume/bytes', r2.digest))?.size, data2.length);

        // A factory with an unknown digest: hashed while streaming, re-hashed from the acknowledged offset.
        const data3 = generateBytes('resume3', 800 * 1024);
        const file3 = join(tmp, `resume3-${name}`);
        writeFileSync(file3, data3);
        proxy.arm(450 * 1024);
        const r3 = await pc.pushBlob('resume/hashing', (off) => createReadStream(file3, { start: off }), { size: data3.length });
        assert.equal(r3.digest, sha256(data3));
        assert.ok(r3.resumed >= 1);
      } finally {
        pc.close();
        await proxy.close();
      }
    });

    test('cross-repository mount, copyBlob, upload cancel, deletes', async () => {
      const data = generateBytes('mount', 50_000);
      const src = await c.pushBlob('mount/src', data);
      const m = await c.pushBlob('mount/dst', data, { from: 'mount/src' });
      assert.equal(m.outcome, 'mounted');
      assert.equal((await c.headBlob('mount/dst', src.digest))?.size, data.length);
      const cp = await c.copyBlob({ client: c, repo: 'mount/src' }, 'mount/copy', { digest: src.digest, size: data.length });
      assert.equal(cp.outcome, 'mounted');
      assert.equal((await c.copyBlob({ client: c, repo: 'mount/src' }, 'mount/copy', { digest: src.digest, size: data.length })).outcome, 'exists');
      // A mount whose source lacks the blob falls back to an upload.
      const other = generateBytes('mount-fallback', 1000);
      const fb = await c.pushBlob('mount/dst', other, { from: 'mount/empty' });
      assert.equal(fb.outcome, 'uploaded');

      const start = await c.send({ method: 'POST', url: '/v2/mount/dst/blobs/uploads/', scopes: ['repository:mount/dst:pull,push'], ok: [202] });
      start.body.resume();
      const loc = new URL(start.header('location')!, c.url).href;
      await c.cancelUpload(loc);
      await assert.rejects(c.send({ method: 'GET', url: loc, scopes: [], ok: [204] }), (e: RegistryError) => e.status === 404);

      const cfg = Buffer.from('{}');
      await c.pushBlob('mount/dst', cfg);
      const put = await c.putManifest('mount/dst', 'del', { schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciEmpty, digest: sha256(cfg), size: 2 }, layers: [] });
      await c.deleteManifest('mount/dst', put.digest);
      assert.equal(await c.headManifest('mount/dst', put.digest), undefined);
      await c.deleteBlob('mount/dst', fb.digest);
      assert.equal(await c.headBlob('mount/dst', fb.digest), undefined);
    });

    test(`referrers ${name === 'berth' ? 'through the API' : 'through the tag-schema fallback'}`, async () => {
      const repo = 'refs/app';
      const cfg = Buffer.from('{}');
      await c.pushBlob(repo, cfg);
      const empty = { mediaType: MediaType.OciEmpty, digest: sha256(cfg), size: 2 };
      const subject = await c.putManifest(repo, 'v1', { schemaVersion: 2, mediaType: MediaType.OciManifest, config: empty, layers: [] });
      const subjectDesc: Descriptor = { mediaType: MediaType.OciManifest, digest: subject.digest as Descriptor['digest'], size: (await c.headManifest(repo, 'v1'))!.size };
      const sig = await c.putManifest(repo, sha256(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType: 'application/vnd.example.sig', config: empty, layers: [empty], subject: subjectDesc }))), {
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        artifactType: 'application/vnd.example.sig',
        config: empty,
        layers: [empty],
        subject: subjectDesc,
      });
      const sbomBody = { schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType: 'application/vnd.example.sbom', config: empty, layers: [empty], subject: subjectDesc };
      const sbom = await c.putManifest(repo, sha256(Buffer.from(JSON.stringify(sbomBody))), sbomBody);
      assert.equal(sig.subjectProcessed, t.hasReferrersApi);
      const all = await c.referrers(repo, subject.digest);
      assert.equal(all.source, t.hasReferrersApi ? 'api' : 'tag-schema');
      assert.deepEqual(all.manifests.map((m) => m.digest).sort(), [sig.digest, sbom.digest].sort());
      const only = await c.referrers(repo, subject.digest, { artifactType: 'application/vnd.example.sbom' });
      assert.deepEqual(only.manifests.map((m) => m.digest), [sbom.digest]);
      assert.equal(only.manifests[0]!.artifactType, 'application/vnd.example.sbom');
      const none = await c.referrers(repo, sha256(Buffer.from('nothing')));
      assert.deepEqual(none.manifests, []);
    });
  });
}
