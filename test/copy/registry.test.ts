/**
 * The copy engine with registry endpoints (over berth/client): layout -> Berth -> distribution 2.8 -> layout
 * with identical digests, referrers through both the API and the tag-schema fallback, mounts within one
 * registry, skipped blobs, a copy whose source breaks mid-blob resumed by a re-run, and skopeo reading the result.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { RegistryClient } from '../../src/client/client.ts';
import { copyImage } from '../../src/copy/copy.ts';
import { OciLayout } from '../../src/copy/oci-layout.ts';
import { openDestination, openSource, parseImageReference } from '../../src/copy/reference.ts';
import { RegistryEndpoint } from '../../src/copy/registry.ts';
import { blobDigests } from '../helpers/images.ts';
import { rawDigest } from '../helpers/run.ts';
import { startBerth, startDistribution, type RunningRegistry } from '../helpers/servers.ts';
import { type Fixture, buildFixture, flakySource, verifyBlobs } from './helpers.ts';

describe('copy with registry endpoints', { timeout: 180_000 }, () => {
  let fx: Fixture;
  let berth: RunningRegistry;
  let dist: RunningRegistry;
  const clients = new Map<string, RegistryClient>();
  const clientFor = (registry: string): RegistryClient => {
    let c = clients.get(registry);
    if (!c) clients.set(registry, (c = new RegistryClient({ registry, insecure: true, credentials: 'none' })));
    return c;
  };

  before(async () => {
    fx = buildFixture(2 * 1024 * 1024);
    [berth, dist] = await Promise.all([startBerth(), startDistribution()]);
  });
  after(async () => {
    for (const c of clients.values()) c.close();
    await Promise.all([berth?.stop(), dist?.stop()]);
    fx?.cleanup();
  });

  test('layout -> Berth -> distribution -> layout: a multi-arch index and a referrer keep every digest', async () => {
    const toBerth = openDestination(parseImageReference(`docker://${berth.host}/copy/app:multi`), clientFor);
    const r1 = await copyImage(new OciLayout(fx.dir), 'multi', toBerth.destination, toBerth.ref);
    assert.equal(r1.digest, fx.index.digest);
    const single = openDestination(parseImageReference(`${berth.host}/copy/app:single`), clientFor);
    const r2 = await copyImage(new OciLayout(fx.dir), 'single', single.destination, single.ref, { referrers: true });
    assert.equal(r2.digest, fx.single.digest);
    assert.equal(r2.referrers, 1);
    // skopeo reads what the engine wrote.
    assert.equal(await rawDigest(`docker://${berth.host}/copy/app:multi`, ['--tls-verify=false']), fx.index.digest);

    // Registry to registry; distribution 2.8 has no referrers API, so the referrer goes by the tag schema.
    for (const tag of ['multi', 'single']) {
      const src = openSource(parseImageReference(`${berth.host}/copy/app:${tag}`), clientFor);
      const dst = openDestination(parseImageReference(`${dist.host}/mirror/app:${tag}`), clientFor);
      await copyImage(src.source, src.ref, dst.destination, dst.ref, { referrers: true });
    }
    const viaTagSchema = await clientFor(dist.host).referrers('mirror/app', fx.single.digest);
    assert.equal(viaTagSchema.source, 'tag-schema');
    assert.deepEqual(viaTagSchema.manifests.map((m) => m.digest), [fx.artifact.digest]);

    // And back to disk: byte-identical blobs and the same roots.
    const out = join(fx.root, 'from-distribution');
    for (const tag of ['multi', 'single']) {
      const src = openSource(parseImageReference(`docker://${dist.host}/mirror/app:${tag}`), clientFor);
      const r = await copyImage(src.source, src.ref, new OciLayout(out), tag, { referrers: true });
      assert.equal(r.digest, tag === 'multi' ? fx.index.digest : fx.single.digest);
    }
    const want = new Set([...blobDigests(fx.index).layers, ...blobDigests(fx.index).manifests, fx.index.digest, ...blobDigests(fx.single).layers, fx.single.digest, ...blobDigests(fx.artifact).layers, fx.artifact.digest]);
    for (const d of want) assert.ok(verifyBlobs(out).includes(d), `${d} came back`);
  });

  test('within one registry, blobs are mounted, not transferred; present blobs are skipped', async () => {
    const src = new RegistryEndpoint(clientFor(berth.host), 'copy/app');
    const r = await copyImage(src, 'single', new RegistryEndpoint(clientFor(berth.host), 'other/app'), 'single', { mountFrom: 'copy/app' });
    assert.equal(r.blobsTransferred, 0);
    assert.ok(r.blobsMounted >= 2, JSON.stringify(r));
    const again = await copyImage(src, 'single', new RegistryEndpoint(clientFor(berth.host), 'other/app'), 'single');
    assert.equal(again.blobsTransferred + again.blobsMounted, 0);
    assert.ok(again.blobsSkipped >= 2);
  });

  /** Copies the single image to Berth's `repo` through a source whose big layer breaks `failures` times at `at`. */
  const copyThroughFlaky = async (repo: string, at: number, failures: number): Promise<{ big: string; reopened: Array<{ offset: number }> }> => {
    const big = blobDigests(fx.single).layers.find((d) => d !== fx.single.config.digest)!;
    const flaky = flakySource(new OciLayout(fx.dir), big, at, failures);
    const r = await copyImage(flaky, 'single', new RegistryEndpoint(clientFor(berth.host), repo), 'single', { concurrency: 1 });
    assert.equal(r.digest, fx.single.digest);
    return { big, reopened: flaky.opens.filter((o) => o.digest === big) };
  };

  test('a source that breaks in the middle of a layer is reopened where the registry stopped, in the same run', async () => {
    // Past the first 1 MiB the registry writes in batches of, so part of the layer is in storage when it breaks.
    const { big, reopened } = await copyThroughFlaky('resume/app', 1300 * 1024, 2);
    assert.ok(reopened.length >= 2, JSON.stringify(reopened));
    // The upload continued from what the registry acknowledged, not from the start.
    assert.ok(reopened.slice(1).some((o) => o.offset > 0), JSON.stringify(reopened));
    const blob = await clientFor(berth.host).getBlob('resume/app', big);
    for await (const _ of blob.stream) void _;
  });

  test('a source that breaks before anything reached storage resumes from 0 (upload status "Range: 0-0")', async () => {
    const { reopened } = await copyThroughFlaky('resume/zero', 300 * 1024, 1);
    assert.deepEqual(reopened.map((o) => o.offset), [0, 0]);
  });

  test('a source that keeps failing: the copy fails, leaves no tag, and a re-run completes it', async () => {
    const big = blobDigests(fx.single).layers.find((d) => d !== fx.single.config.digest)!;
    const flaky = flakySource(new OciLayout(fx.dir), big, 300 * 1024, 1000);
    const dst = new RegistryEndpoint(clientFor(berth.host), 'broken/app');
    await assert.rejects(copyImage(flaky, 'single', dst, 'single', { concurrency: 1 }));
    await assert.rejects(clientFor(berth.host).getManifest('broken/app', 'single'), /MANIFEST_UNKNOWN|NAME_UNKNOWN/);
    const r = await copyImage(new OciLayout(fx.dir), 'single', dst, 'single');
    assert.equal(r.digest, fx.single.digest);
  });
});
