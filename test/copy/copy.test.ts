/** The copy engine over OCI layouts and docker archives: tags, digests, platforms, referrers, skips, resumes. */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { copyAllTags, copyImage, type ProgressEvent } from '../../src/copy/copy.ts';
import { DockerArchiveReader, DockerArchiveWriter } from '../../src/copy/docker-archive.ts';
import { OciLayout, parseOciReference } from '../../src/copy/oci-layout.ts';
import { parseImageReference } from '../../src/copy/reference.ts';
import { blobDigests } from '../helpers/images.ts';
import { type Fixture, buildFixture, flakySource, indexJson, verifyBlobs } from './helpers.ts';

let fx: Fixture;
before(() => {
  fx = buildFixture(1024 * 1024);
});
after(() => fx.cleanup());

describe('references', () => {
  test('oci: splits at the first colon, as skopeo does', () => {
    assert.deepEqual(parseOciReference('/tmp/x:v1'), { dir: '/tmp/x', tag: 'v1' });
    assert.deepEqual(parseOciReference('/tmp/x'), { dir: '/tmp/x' });
    assert.deepEqual(parseOciReference('/tmp/x:example.com/app:v1'), { dir: '/tmp/x', tag: 'example.com/app:v1' });
    assert.throws(() => parseOciReference('/tmp/x:bad tag'));
  });
  test('docker-archive: and registry references', () => {
    assert.deepEqual(parseImageReference('docker-archive:/a.tar:example.com/app:v1'), { transport: 'docker-archive', file: '/a.tar', ref: 'example.com/app:v1' });
    assert.deepEqual(parseImageReference('docker-archive:/a.tar:@1'), { transport: 'docker-archive', file: '/a.tar', ref: '@1' });
    assert.deepEqual(parseImageReference('docker://localhost:5000/team/app:v2'), { transport: 'docker', registry: 'localhost:5000', repository: 'team/app', tag: 'v2' });
    assert.deepEqual(parseImageReference('registry.example/app'), { transport: 'docker', registry: 'registry.example', repository: 'app', tag: 'latest' });
  });
});

describe('layout -> layout', () => {
  test('all tags and the referrer arrive with identical digests; a second run transfers nothing', async () => {
    const dst = join(fx.root, 'all');
    const events: ProgressEvent[] = [];
    const r = await copyAllTags(new OciLayout(fx.dir), new OciLayout(dst), { referrers: true, onProgress: (e) => events.push(e) });
    assert.deepEqual(r.tags, [
      { tag: 'multi', digest: fx.index.digest },
      { tag: 'single', digest: fx.single.digest },
    ]);
    assert.equal(r.referrers, 1);
    const want = new Set([...blobDigests(fx.index).layers, ...blobDigests(fx.index).manifests, fx.index.digest, ...blobDigests(fx.single).layers, fx.single.digest, ...blobDigests(fx.artifact).layers, fx.artifact.digest]);
    assert.deepEqual(verifyBlobs(dst), [...want].sort());
    const blobCount = new Set([...blobDigests(fx.index).layers, ...blobDigests(fx.single).layers, ...blobDigests(fx.artifact).layers]).size;
    assert.equal(r.blobsTransferred, blobCount);
    assert.equal(r.blobsSkipped, 0);
    for (const d of want) {
      if (existsSync(join(fx.dir, 'blobs/sha256', d.slice(7)))) assert.deepEqual(readFileSync(join(dst, 'blobs/sha256', d.slice(7))), readFileSync(join(fx.dir, 'blobs/sha256', d.slice(7))));
    }
    const idx = indexJson(dst);
    assert.equal(idx.manifests.length, 3, 'two tags and the untagged referrer; index children are not listed');
    assert.ok(idx.manifests.some((m) => m.digest === fx.artifact.digest && m.annotations === undefined));
    assert.ok(events.some((e) => e.phase === 'done' && e.done === e.total));
    // Referrers are found again in the copy.
    assert.deepEqual((await new OciLayout(dst).referrers(fx.single.digest as never)).map((d) => d.digest), [fx.artifact.digest]);

    const again = await copyAllTags(new OciLayout(fx.dir), new OciLayout(dst), { referrers: true });
    assert.equal(again.blobsTransferred, 0);
    assert.equal(again.blobsSkipped, blobCount);
    assert.equal(indexJson(dst).manifests.length, 3, 'retagging replaces, never duplicates');
  });

  test('--platform copies only the selected image, as a single-platform manifest', async () => {
    const dst = join(fx.root, 'arm');
    const r = await copyImage(new OciLayout(fx.dir), 'multi', new OciLayout(dst), 'arm', { platform: 'linux/arm64' });
    const arm = fx.index.images[1]!;
    assert.equal(r.digest, arm.digest);
    assert.equal(r.manifests, 1);
    assert.deepEqual(indexJson(dst).manifests.map((m) => [m.digest, m.annotations?.['org.opencontainers.image.ref.name']]), [[arm.digest, 'arm']]);
    assert.deepEqual(verifyBlobs(dst), [arm.digest, ...blobDigests(arm).layers].sort());
    await assert.rejects(copyImage(new OciLayout(fx.dir), 'multi', new OciLayout(dst), 'x', { platform: 'linux/s390x' }), /no image for platform linux\/s390x/);
  });

  test('concurrent copies into one layout do not corrupt it', async () => {
    const dst = join(fx.root, 'concurrent');
    const rs = await Promise.all([0, 1, 2].map(() => copyImage(new OciLayout(fx.dir), 'multi', new OciLayout(dst), 'multi', { concurrency: 2 })));
    for (const r of rs) assert.equal(r.digest, fx.index.digest);
    verifyBlobs(dst);
    assert.equal(indexJson(dst).manifests.length, 1);
  });
});

describe('interrupted copies', () => {
  test('a source that breaks mid-blob leaves nothing corrupt; the re-run resumes from the partial file', async () => {
    const dst = join(fx.root, 'resume');
    const big = fx.single.layers[0]!.desc;
    const flaky = flakySource(new OciLayout(fx.dir), big.digest, 300 * 1024);
    await assert.rejects(copyImage(flaky, 'single', new OciLayout(dst), 'single', { concurrency: 1 }), /connection reset/);
    const present = verifyBlobs(dst);
    assert.ok(!present.includes(big.digest), 'the broken blob is not visible');
    assert.deepEqual(readdirSync(join(dst, '.berth-tmp')).filter((f) => f.endsWith('.partial')), [`sha256-${big.digest.slice(7)}.partial`]);
    assert.ok(!indexJson(dst).manifests.some((m) => m.digest === fx.single.digest), 'no manifest before its blobs');

    const r = await copyImage(flaky, 'single', new OciLayout(dst), 'single');
    assert.equal(r.digest, fx.single.digest);
    const resumed = flaky.opens.filter((o) => o.digest === big.digest);
    assert.equal(resumed.length, 2);
    assert.ok(resumed[1]!.offset > 0 && resumed[1]!.offset <= 300 * 1024, `resumed at ${resumed[1]!.offset}`);
    assert.ok(verifyBlobs(dst).includes(big.digest));
    assert.deepEqual(readdirSync(join(dst, '.berth-tmp')), []);
  });

  test('an abort mid-blob, then a re-run completes; a corrupt partial is rewritten', async () => {
    const dst = join(fx.root, 'abort');
    const big = fx.single.layers[0]!.desc;
    const ac = new AbortController();
    await assert.rejects(
      copyImage(new OciLayout(fx.dir), 'single', new OciLayout(dst), 'single', {
        signal: ac.signal,
        onProgress: (e) => {
          if (e.digest === big.digest && e.phase === 'transfer' && e.done > 100 * 1024) ac.abort();
        },
      }),
      { name: 'AbortError' },
    );
    verifyBlobs(dst);
    // Whether the aborted write left a partial depends on how far the file writes had got when the abort came
    // (none under a loaded machine): make one that is corrupt either way, as a torn write would leave it. The
    // resumed blob then fails verification and is written again from the start.
    const partial = join(dst, '.berth-tmp', `sha256-${big.digest.slice(7)}.partial`);
    const { mkdirSync, writeFileSync } = await import('node:fs');
    mkdirSync(join(dst, '.berth-tmp'), { recursive: true });
    writeFileSync(partial, Buffer.alloc(4096, 7));
    const r = await copyImage(new OciLayout(fx.dir), 'single', new OciLayout(dst), 'single');
    assert.equal(r.digest, fx.single.digest);
    assert.ok(verifyBlobs(dst).includes(big.digest));
  });
});

describe('docker-archive', () => {
  test('layout -> archive -> layout keeps config and layer digests for one platform', async () => {
    const file = join(fx.root, 'amd64.tar');
    const w = await copyImage(new OciLayout(fx.dir), 'multi', new DockerArchiveWriter(file), 'example.com/app:v1', { platform: 'linux/amd64' });
    const amd = fx.index.images[0]!;
    assert.equal(w.digest, amd.digest);
    const reader = new DockerArchiveReader(file);
    assert.deepEqual(await reader.listTags(), ['example.com/app:v1']);
    const back = join(fx.root, 'from-archive');
    const r = await copyImage(reader, 'example.com/app:v1', new OciLayout(back), 'v1');
    const m = JSON.parse((await new OciLayout(back).getManifest('v1')).bytes.toString()) as { config: { digest: string }; layers: Array<{ digest: string; mediaType: string }> };
    assert.equal(m.config.digest, amd.config.digest);
    assert.deepEqual(m.layers.map((l) => l.digest), amd.layers.map((l) => l.desc.digest));
    assert.deepEqual(m.layers.map((l) => l.mediaType), amd.layers.map(() => 'application/vnd.oci.image.layer.v1.tar+gzip'));
    assert.equal(r.blobsTransferred, 3);
    verifyBlobs(back);
  });

  test('a failed archive write leaves neither the file nor a temporary one', async () => {
    const file = join(fx.root, 'failed.tar');
    const flaky = flakySource(new OciLayout(fx.dir), fx.single.layers[0]!.desc.digest, 1000);
    await assert.rejects(copyImage(flaky, 'single', new DockerArchiveWriter(file), 'app:1'));
    assert.ok(!existsSync(file));
    assert.deepEqual(readdirSync(fx.root).filter((f) => f.startsWith('.docker-archive-')), []);
  });
});
