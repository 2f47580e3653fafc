/** Interoperability with skopeo (Debian's 1.9): it reads what we write and we read what it writes. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { copyImage } from '../../src/copy/copy.ts';
import { DockerArchiveReader, DockerArchiveWriter } from '../../src/copy/docker-archive.ts';
import { OciLayout } from '../../src/copy/oci-layout.ts';
import { layoutDigest } from '../helpers/images.ts';
import { skopeo } from '../helpers/run.ts';
import { type Fixture, buildFixture, verifyBlobs } from './helpers.ts';

let fx: Fixture;
before(() => {
  fx = buildFixture();
});
after(() => fx.cleanup());

describe('skopeo interop', () => {
  test('skopeo copies our layout (index and image) with digests preserved, and we copy skopeo\'s', async () => {
    const ours = join(fx.root, 'ours');
    await copyImage(new OciLayout(fx.dir), 'multi', new OciLayout(ours), 'multi');
    await copyImage(new OciLayout(fx.dir), 'single', new OciLayout(ours), 'example.com/app:v1');
    const theirs = join(fx.root, 'theirs');
    await skopeo('copy', '--all', `oci:${ours}:multi`, `oci:${theirs}:multi`);
    await skopeo('copy', `oci:${ours}:example.com/app:v1`, `oci:${theirs}:single`);
    assert.equal(layoutDigest(theirs, 'multi'), fx.index.digest);
    assert.equal(layoutDigest(theirs, 'single'), fx.single.digest);

    const back = join(fx.root, 'back');
    const r = await copyImage(new OciLayout(theirs), 'multi', new OciLayout(back), 'm');
    assert.equal(r.digest, fx.index.digest);
    assert.equal(layoutDigest(back, 'm'), fx.index.digest);
    verifyBlobs(back);
  });

  test('we read the docker-archive skopeo writes (uncompressed layers named by diff id)', async () => {
    const file = join(fx.root, 'skopeo.tar');
    await skopeo('copy', `oci:${fx.dir}:single`, `docker-archive:${file}:example.com/app:v1`);
    const reader = new DockerArchiveReader(file);
    assert.deepEqual(await reader.listTags(), ['example.com/app:v1']);
    const dst = join(fx.root, 'from-skopeo-archive');
    await copyImage(reader, 'example.com/app:v1', new OciLayout(dst), 'v1');
    const m = JSON.parse((await new OciLayout(dst).getManifest('v1')).bytes.toString()) as { config: { digest: string }; layers: Array<{ digest: string; mediaType: string }> };
    assert.equal(m.config.digest, fx.single.config.digest, 'the config travels unchanged');
    assert.deepEqual(m.layers.map((l) => l.digest), fx.single.layers.map((l) => l.diffId), 'layers are the uncompressed tars');
    assert.ok(m.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar'));
    verifyBlobs(dst);
    // And skopeo reads that layout back.
    const inspect = JSON.parse((await skopeo('inspect', `oci:${dst}:v1`)).stdout) as { Layers: string[] };
    assert.deepEqual(inspect.Layers, fx.single.layers.map((l) => l.diffId));
  });

  test('skopeo reads our docker-archive (gzip layers stored as they are)', async () => {
    const file = join(fx.root, 'ours.tar');
    await copyImage(new OciLayout(fx.dir), 'multi', new DockerArchiveWriter(file), 'example.com/app:v2', { platform: 'linux/arm64' });
    const arm = fx.index.images[1]!;
    const inspect = JSON.parse((await skopeo('inspect', `docker-archive:${file}`)).stdout) as { Architecture: string; Layers: string[]; RepoTags: string[] };
    assert.equal(inspect.Architecture, 'arm64');
    assert.deepEqual(inspect.Layers, arm.layers.map((l) => l.diffId), 'skopeo decompresses and finds the diff ids of the config');
    const theirs = join(fx.root, 'theirs-from-archive');
    await skopeo('copy', `docker-archive:${file}:example.com/app:v2`, `oci:${theirs}:v2`);
    const config = JSON.parse((await skopeo('inspect', '--config', `oci:${theirs}:v2`)).stdout) as { architecture: string; rootfs: { diff_ids: string[] } };
    assert.equal(config.architecture, 'arm64');
    assert.deepEqual(config.rootfs.diff_ids, arm.layers.map((l) => l.diffId));
  });
});
