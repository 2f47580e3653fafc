/**
 * End to end with skopeo against one Berth instance: images built offline (OCI, Docker schema2, an OCI index,
 * OCI artifacts with a subject) are copied in and back out, and their manifest digests must survive exactly.
 * Also inspect, list-tags, delete, sync, a cross-repository mount and the referrers API.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import {
  ACCEPT_ALL,
  MT,
  buildArtifact,
  buildDockerImage,
  buildImage,
  buildMultiArch,
  dirTransportDigest,
  layoutDigest,
  sha256,
  type BuiltArtifact,
  type BuiltImage,
  type BuiltIndex,
  type BuiltSource,
  type Descriptor,
} from '../helpers/images.ts';
import { rawDigest, skopeo, skopeoCopy } from '../helpers/run.ts';

let reg: RunningRegistry;
let tmp: string;
let oci: BuiltSource<BuiltImage>;
let docker: BuiltSource<BuiltImage>;
let multi: BuiltSource<BuiltIndex>;
let sbom: BuiltSource<BuiltArtifact>;
let sig: BuiltSource<BuiltArtifact>;

const SBOM_TYPE = 'application/vnd.example.sbom.v1+json';
const SIG_TYPE = 'application/vnd.example.signature.v1';

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'berth-e2e-skopeo-'));
  reg = await startBerth({ root: join(tmp, 'registry') });
  oci = buildImage(join(tmp, 'src-oci'), 'v1', {
    layers: [[{ path: 'etc/hello.txt', size: 300 }], [{ path: 'usr/bin/tool', size: 8 * 1024 }, { path: 'usr/share/doc/tool/README', size: 1024 }], [{ path: 'var/lib/data.bin', size: 16 * 1024 }]],
    seed: 'skopeo-oci',
  });
  docker = buildDockerImage(join(tmp, 'src-docker'), 'v1', { layers: 2, layerSize: 4096, seed: 'skopeo-docker' });
  multi = buildMultiArch(join(tmp, 'src-multi'), 'v1', { seed: 'skopeo-multi', layerSize: 2048 });
  sbom = buildArtifact(join(tmp, 'src-sbom'), 'sbom', { subject: oci.built.desc, artifactType: SBOM_TYPE, payload: Buffer.from('{"spdxVersion":"SPDX-2.3"}') });
  sig = buildArtifact(join(tmp, 'src-sig'), 'sig', { subject: oci.built.desc, artifactType: SIG_TYPE, payload: Buffer.from('not really a signature') });
});

after(async () => {
  await reg?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function dockerRef(repoTag: string): string {
  return `docker://${reg.host}/${repoTag}`;
}

/** GET (or HEAD) a manifest with the pull `Accept` list. */
async function getManifest(repo: string, ref: string, method = 'GET'): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const r = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { method, headers: { Accept: ACCEPT_ALL } });
  return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
}

/** The registry serves `expected` under `repo:ref` with matching digest headers, by tag and by digest. */
async function assertServed(repo: string, ref: string, expected: { digest: string; manifest: Buffer; mediaType: string }): Promise<void> {
  for (const r of [ref, expected.digest]) {
    const g = await getManifest(repo, r);
    assert.equal(g.status, 200, `GET ${repo}/manifests/${r}`);
    assert.equal(g.headers.get('docker-content-digest'), expected.digest);
    assert.equal(g.headers.get('content-type'), expected.mediaType);
    assert.equal(sha256(g.body), expected.digest);
    assert.deepEqual(g.body, expected.manifest);
    const h = await getManifest(repo, r, 'HEAD');
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('docker-content-digest'), expected.digest);
    assert.equal(h.headers.get('content-length'), String(expected.manifest.length));
  }
  assert.equal(await rawDigest(dockerRef(`${repo}:${ref}`)), expected.digest);
}

describe('skopeo against Berth', () => {
  test('OCI image: copy in, inspect --raw, headers, copy back out to a fresh oci: layout', async () => {
    await skopeoCopy(oci.src, dockerRef('e2e/oci:v1'));
    await assertServed('e2e/oci', 'v1', oci.built);
    const out = join(tmp, 'out-oci');
    await skopeoCopy(dockerRef('e2e/oci:v1'), `oci:${out}:v1`);
    assert.equal(layoutDigest(out, 'v1'), oci.built.digest);
    for (const d of [oci.built.config.digest, ...oci.built.layers.map((l) => l.desc.digest)]) {
      const p = join(out, 'blobs', 'sha256', d.slice(7));
      assert.equal(sha256(readFileSync(p)), d, `blob ${d} pulled intact`);
    }
  });

  test('Docker schema2 image: copy in and back out with identical digests', async () => {
    await skopeoCopy(docker.src, dockerRef('e2e/docker:v1'));
    await assertServed('e2e/docker', 'v1', docker.built);
    // skopeo 1.9's oci: destination converts schema2 to OCI (new digest), so the byte-preserving way out is dir:
    const out = join(tmp, 'out-docker');
    await skopeoCopy(dockerRef('e2e/docker:v1'), `dir:${out}`);
    assert.equal(dirTransportDigest(out), docker.built.digest);
    const cfg = await fetch(`${reg.url}/v2/e2e/docker/blobs/${docker.built.config.digest}`);
    assert.equal(cfg.status, 200);
    assert.equal(cfg.headers.get('docker-content-digest'), docker.built.config.digest);
    assert.equal(sha256(Buffer.from(await cfg.arrayBuffer())), docker.built.config.digest);
  });

  test('multi-arch OCI index: copy --all in and back out', async () => {
    await skopeoCopy(multi.src, dockerRef('e2e/multi:v1'), '--all');
    await assertServed('e2e/multi', 'v1', multi.built);
    for (const img of multi.built.images) {
      const g = await getManifest('e2e/multi', img.digest);
      assert.equal(g.status, 200);
      assert.equal(g.headers.get('docker-content-digest'), img.digest);
      assert.deepEqual(g.body, img.manifest);
    }
    const out = join(tmp, 'out-multi');
    await skopeoCopy(dockerRef('e2e/multi:v1'), `oci:${out}:v1`, '--all');
    assert.equal(layoutDigest(out, 'v1'), multi.built.digest);
    for (const img of multi.built.images) {
      assert.deepEqual(readFileSync(join(out, 'blobs', 'sha256', img.digest.slice(7))), img.manifest);
      for (const l of img.layers) assert.ok(existsSync(join(out, 'blobs', 'sha256', l.desc.digest.slice(7))));
    }
  });

  test('skopeo inspect: image summary, --config, and --override-arch arm64 on the index', async () => {
    const info = JSON.parse((await skopeo('inspect', '--tls-verify=false', dockerRef('e2e/oci:v1'))).stdout) as {
      Digest: string;
      Architecture: string;
      Os: string;
      Layers: string[];
      Labels: Record<string, string>;
    };
    assert.equal(info.Digest, oci.built.digest);
    assert.equal(info.Architecture, 'amd64');
    assert.equal(info.Os, 'linux');
    assert.deepEqual(info.Layers, oci.built.layers.map((l) => l.desc.digest));
    assert.deepEqual(info.Labels, oci.built.configJson.config.Labels);

    const config = JSON.parse((await skopeo('inspect', '--config', '--tls-verify=false', dockerRef('e2e/oci:v1'))).stdout) as {
      architecture: string;
      os: string;
      rootfs: { type: string; diff_ids: string[] };
    };
    assert.equal(config.architecture, 'amd64');
    assert.deepEqual(config.rootfs.diff_ids, oci.built.configJson.rootfs.diff_ids);
    assert.equal(await rawDigest(dockerRef('e2e/oci:v1'), ['--config']), oci.built.config.digest);

    const arm = multi.built.images.find((i) => i.platform.architecture === 'arm64');
    assert.ok(arm);
    const armInfo = JSON.parse((await skopeo('--override-arch', 'arm64', 'inspect', '--tls-verify=false', dockerRef('e2e/multi:v1'))).stdout) as {
      Architecture: string;
      Layers: string[];
      Labels: Record<string, string>;
    };
    assert.equal(armInfo.Architecture, 'arm64');
    assert.deepEqual(armInfo.Layers, arm.layers.map((l) => l.desc.digest));
    assert.deepEqual(armInfo.Labels, arm.configJson.config.Labels);
    assert.equal(await rawDigest(dockerRef('e2e/multi:v1'), ['--config'], ['--override-arch', 'arm64']), arm.config.digest);
  });

  test('cross-repository copy mounts the layers from the source repository', async () => {
    const r = await skopeo('--debug', 'copy', '--src-tls-verify=false', '--dest-tls-verify=false', dockerRef('e2e/oci:v1'), dockerRef('e2e/mounted:v1'));
    for (const l of oci.built.layers) {
      assert.ok(r.stderr.includes(`/v2/e2e/mounted/blobs/uploads/?from=e2e%2Foci&mount=sha256%3A${l.desc.digest.slice(7)}`), `skopeo tried to mount ${l.desc.digest}`);
      const link = join(reg.root, 'docker/registry/v2/repositories/e2e/mounted/_layers/sha256', l.desc.digest.slice(7), 'link');
      assert.equal(readFileSync(link, 'utf8'), l.desc.digest);
    }
    const mounts = reg.logs().split('\n').filter((line) => line.includes('"method":"POST"') && line.includes('/v2/e2e/mounted/blobs/uploads/') && line.includes('"status":201'));
    assert.ok(mounts.length >= oci.built.layers.length, `Berth answered ${mounts.length} mount POSTs with 201`);
    await assertServed('e2e/mounted', 'v1', oci.built);
  });

  test('skopeo list-tags', async () => {
    await skopeoCopy(dockerRef('e2e/oci:v1'), dockerRef('e2e/oci:v2'));
    await skopeoCopy(dockerRef('e2e/oci:v1'), dockerRef('e2e/oci:latest'));
    const tags = JSON.parse((await skopeo('list-tags', '--tls-verify=false', dockerRef('e2e/oci'))).stdout) as { Repository: string; Tags: string[] };
    assert.equal(tags.Repository, `${reg.host}/e2e/oci`);
    assert.deepEqual(tags.Tags, ['latest', 'v1', 'v2']);
  });

  test('skopeo delete removes the manifest and every tag on it', async () => {
    await skopeoCopy(dockerRef('e2e/oci:v1'), dockerRef('e2e/del:a'));
    await skopeoCopy(dockerRef('e2e/oci:v1'), dockerRef('e2e/del:b'));
    await skopeoCopy(dockerRef('e2e/docker:v1'), dockerRef('e2e/del:keep'));
    assert.equal((await getManifest('e2e/del', 'a')).status, 200);
    await skopeo('delete', '--tls-verify=false', dockerRef('e2e/del:a'));
    assert.equal((await getManifest('e2e/del', 'a')).status, 404);
    assert.equal((await getManifest('e2e/del', 'b')).status, 404);
    assert.equal((await getManifest('e2e/del', oci.built.digest)).status, 404);
    assert.equal((await getManifest('e2e/del', 'keep')).status, 200);
    const tags = JSON.parse((await skopeo('list-tags', '--tls-verify=false', dockerRef('e2e/del'))).stdout) as { Tags: string[] };
    assert.deepEqual(tags.Tags, ['keep']);
    // the source repository is untouched
    assert.equal((await getManifest('e2e/oci', 'v1')).status, 200);
  });

  test('skopeo sync --src docker --dest dir', async () => {
    await skopeoCopy(dockerRef('e2e/oci:v1'), dockerRef('e2e/sync:one'));
    await skopeoCopy(dockerRef('e2e/docker:v1'), dockerRef('e2e/sync:two'));
    const dest = join(tmp, 'out-sync');
    await skopeo('sync', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', `${reg.host}/e2e/sync`, dest);
    assert.equal(dirTransportDigest(join(dest, 'sync:one')), oci.built.digest);
    assert.equal(dirTransportDigest(join(dest, 'sync:two')), docker.built.digest);
    for (const l of oci.built.layers) assert.equal(sha256(readFileSync(join(dest, 'sync:one', l.desc.digest.slice(7)))), l.desc.digest);
  });

  test('artifacts with a subject: copy round trip and the referrers API', async () => {
    await skopeoCopy(sbom.src, dockerRef('e2e/oci:sbom'));
    await skopeoCopy(sig.src, dockerRef('e2e/oci:sig'));
    await assertServed('e2e/oci', 'sbom', sbom.built);
    await assertServed('e2e/oci', 'sig', sig.built);
    const cfg = await fetch(`${reg.url}/v2/e2e/oci/blobs/${sbom.built.config.digest}`);
    assert.equal(Buffer.from(await cfg.arrayBuffer()).toString(), '{}');
    const out = join(tmp, 'out-sbom');
    await skopeoCopy(dockerRef('e2e/oci:sbom'), `oci:${out}:sbom`);
    assert.equal(layoutDigest(out, 'sbom'), sbom.built.digest);

    const expect = (a: BuiltArtifact): Descriptor => ({ mediaType: MT.ociManifest, digest: a.digest, size: a.manifest.length, artifactType: a.artifactType, annotations: a.annotations });
    const referrers = async (query = ''): Promise<{ headers: Headers; index: { schemaVersion: number; mediaType: string; manifests: Descriptor[] } }> => {
      const r = await fetch(`${reg.url}/v2/e2e/oci/referrers/${oci.built.digest}${query}`);
      assert.equal(r.status, 200);
      assert.match(r.headers.get('content-type') ?? '', /^application\/vnd\.oci\.image\.index\.v1\+json/);
      return { headers: r.headers, index: (await r.json()) as { schemaVersion: number; mediaType: string; manifests: Descriptor[] } };
    };
    const all = await referrers();
    assert.equal(all.index.schemaVersion, 2);
    assert.equal(all.index.mediaType, MT.ociIndex);
    const byDigest = (a: Descriptor, b: Descriptor): number => (a.digest < b.digest ? -1 : 1);
    assert.deepEqual([...all.index.manifests].sort(byDigest), [expect(sbom.built), expect(sig.built)].sort(byDigest));
    assert.equal(all.headers.get('oci-filters-applied'), null);

    const filtered = await referrers(`?artifactType=${encodeURIComponent(SBOM_TYPE)}`);
    assert.deepEqual(filtered.index.manifests, [expect(sbom.built)]);
    assert.equal(filtered.headers.get('oci-filters-applied'), 'artifactType');

    const none = await referrers(`?artifactType=${encodeURIComponent('application/vnd.example.none')}`);
    assert.deepEqual(none.index.manifests, []);

    // the subject copied elsewhere has no referrers there
    const other = await fetch(`${reg.url}/v2/e2e/mounted/referrers/${oci.built.digest}`);
    assert.equal(other.status, 200);
    assert.deepEqual(((await other.json()) as { manifests: unknown[] }).manifests, []);
  });
});
