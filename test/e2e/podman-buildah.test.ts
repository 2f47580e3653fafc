/**
 * End to end with buildah and podman against one Berth instance. Both use the vfs driver in private temp
 * roots, a private registries.conf and containers.conf (see /work/shared/CLIENTS.md), so nothing touches the
 * machine's own container storage. Images are built from scratch offline; every digest a client reports must
 * be the digest Berth serves, and the digest that comes back on the next pull or push.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { ACCEPT_ALL, MT, generateBytes, sha256, type Descriptor, type Platform } from '../helpers/images.ts';
import { run, rawDigest, type RunResult } from '../helpers/run.ts';

let reg: RunningRegistry;
let tmp: string;
let env: NodeJS.ProcessEnv;

const files = {
  hello: Buffer.from('hello from berth e2e\n'),
  data: generateBytes('podman-buildah/data', 6 * 1024),
  arm: generateBytes('podman-buildah/arm', 3 * 1024),
};

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'berth-e2e-podman-'));
  reg = await startBerth({ root: join(tmp, 'registry') });
  const ctx = join(tmp, 'ctx');
  mkdirSync(ctx);
  writeFileSync(join(ctx, 'hello.txt'), files.hello);
  writeFileSync(join(ctx, 'data.bin'), files.data);
  writeFileSync(join(ctx, 'arm.bin'), files.arm);
  writeFileSync(join(tmp, 'storage.conf'), `[storage]\ndriver = "vfs"\nrunroot = "${tmp}/run"\ngraphroot = "${tmp}/root"\n`);
  writeFileSync(join(tmp, 'registries.conf'), `unqualified-search-registries = []\n\n[[registry]]\nlocation = "${reg.host}"\ninsecure = true\n`);
  writeFileSync(join(tmp, 'containers.conf'), `[engine]\nevents_logger = "none"\ncgroup_manager = "cgroupfs"\n`);
  env = {
    CONTAINERS_STORAGE_CONF: join(tmp, 'storage.conf'),
    CONTAINERS_REGISTRIES_CONF: join(tmp, 'registries.conf'),
    CONTAINERS_CONF: join(tmp, 'containers.conf'),
    BUILDAH_ISOLATION: 'chroot',
    TMPDIR: join(tmp, 'tmp'),
  };
  mkdirSync(join(tmp, 'tmp'));
});

after(async () => {
  await reg?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function buildah(...args: string[]): Promise<RunResult> {
  return run('buildah', ['--storage-driver', 'vfs', '--root', join(tmp, 'root'), '--runroot', join(tmp, 'run'), ...args], { env, cwd: join(tmp, 'ctx') });
}

/** podman with its own storage, separate from buildah's, so pulls really fetch from Berth. */
function podman(...args: string[]): Promise<RunResult> {
  return run('podman', ['--storage-driver', 'vfs', '--root', join(tmp, 'proot'), '--runroot', join(tmp, 'prun'), '--tmpdir', join(tmp, 'ptmp'), '--events-backend', 'none', ...args], { env, cwd: join(tmp, 'ctx') });
}

function readDigest(file: string): string {
  const d = readFileSync(file, 'utf8').trim();
  assert.match(d, /^sha256:[0-9a-f]{64}$/);
  return d;
}

async function getManifest(repo: string, ref: string): Promise<{ status: number; digest: string | null; mediaType: string | null; body: Buffer }> {
  const r = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { headers: { Accept: ACCEPT_ALL } });
  return { status: r.status, digest: r.headers.get('docker-content-digest'), mediaType: r.headers.get('content-type'), body: Buffer.from(await r.arrayBuffer()) };
}

/** Berth serves `digest` for `repo:ref` (header, body hash, and skopeo's view agree); returns the manifest. */
async function assertServes(repo: string, ref: string, digest: string): Promise<{ mediaType: string; body: Buffer }> {
  const g = await getManifest(repo, ref);
  assert.equal(g.status, 200, `GET ${repo}:${ref}`);
  assert.equal(g.digest, digest);
  assert.equal(sha256(g.body), digest);
  assert.equal(await rawDigest(`docker://${reg.host}/${repo}:${ref}`), digest);
  const byDigest = await getManifest(repo, digest);
  assert.equal(byDigest.status, 200);
  assert.deepEqual(byDigest.body, g.body);
  return { mediaType: g.mediaType ?? '', body: g.body };
}

interface ImageManifest {
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

interface IndexManifest {
  mediaType: string;
  manifests: Descriptor[];
}

/** Commits a from-scratch image with the given files and platform into buildah's storage. */
async function buildScratch(name: string, tag: string, copies: Array<[string, string]>, platform: Platform): Promise<void> {
  const ctr = (await buildah('from', '--name', `${name.replace(/\W/g, '-')}-${tag}`, 'scratch')).stdout.trim();
  for (const [src, dst] of copies) await buildah('copy', ctr, src, dst);
  await buildah('config', '--arch', platform.architecture, '--os', platform.os, ...(platform.variant ? ['--variant', platform.variant] : []), '--cmd', '/hello.txt', '--label', `berth.e2e=${tag}`, ctr);
  await buildah('commit', '-q', '--format', 'oci', '--timestamp', '0', ctr, `${name}:${tag}`);
  await buildah('rm', ctr);
}

let amd64Digest = '';
let listDigest = '';

describe('buildah and podman against Berth', () => {
  test('buildah from scratch + copy + commit, then buildah push: the digest Berth serves is the pushed one', async () => {
    await buildScratch('localhost/e2e/app', 'amd64', [['hello.txt', '/hello.txt'], ['data.bin', '/data/data.bin']], { architecture: 'amd64', os: 'linux' });
    const df = join(tmp, 'push.digest');
    await buildah('push', '--tls-verify=false', '--digestfile', df, 'localhost/e2e/app:amd64', `docker://${reg.host}/pb/app:v1`);
    amd64Digest = readDigest(df);
    const served = await assertServes('pb/app', 'v1', amd64Digest);
    assert.equal(served.mediaType, MT.ociManifest);
    const m = JSON.parse(served.body.toString()) as ImageManifest;
    assert.equal(m.layers.length, 1);
    // the layer Berth stores is buildah's tar of exactly what was copied in
    const layer = await fetch(`${reg.url}/v2/pb/app/blobs/${m.layers[0]!.digest}`);
    assert.equal(layer.status, 200);
    const gz = Buffer.from(await layer.arrayBuffer());
    assert.equal(sha256(gz), m.layers[0]!.digest);
    const tarball = gunzipSync(gz);
    assert.ok(tarball.includes(files.hello), 'layer holds hello.txt');
    assert.ok(tarball.includes(files.data), 'layer holds data.bin');
    const cfg = await fetch(`${reg.url}/v2/pb/app/blobs/${m.config.digest}`);
    const config = JSON.parse(Buffer.from(await cfg.arrayBuffer()).toString()) as { architecture: string; os: string; config: { Labels: Record<string, string> } };
    assert.equal(config.architecture, 'amd64');
    assert.equal(config.config.Labels['berth.e2e'], 'amd64');
  });

  test('podman pull gets the same digest back; podman push to another repository keeps it', async () => {
    assert.ok(amd64Digest, 'needs the previous test');
    await podman('pull', '-q', '--tls-verify=false', `${reg.host}/pb/app:v1`);
    const info = JSON.parse((await podman('image', 'inspect', `${reg.host}/pb/app:v1`)).stdout) as Array<{ Digest: string; RepoDigests: string[]; Architecture: string }>;
    assert.equal(info[0]!.Digest, amd64Digest);
    assert.ok(info[0]!.RepoDigests.includes(`${reg.host}/pb/app@${amd64Digest}`), info[0]!.RepoDigests.join(' '));
    assert.equal(info[0]!.Architecture, 'amd64');

    const df = join(tmp, 'podman-push.digest');
    await podman('push', '--tls-verify=false', '--digestfile', df, `${reg.host}/pb/app:v1`, `docker://${reg.host}/pb/app-copy:v1`);
    assert.equal(readDigest(df), amd64Digest);
    await assertServes('pb/app-copy', 'v1', amd64Digest);
  });

  test('buildah manifest create + add two arches + manifest push --all', async () => {
    assert.ok(amd64Digest, 'needs the first test');
    await buildScratch('localhost/e2e/app', 'arm64', [['hello.txt', '/hello.txt'], ['arm.bin', '/data/arm.bin']], { architecture: 'arm64', os: 'linux', variant: 'v8' });
    await buildah('manifest', 'create', 'localhost/e2e/list');
    await buildah('manifest', 'add', 'localhost/e2e/list', 'localhost/e2e/app:amd64');
    await buildah('manifest', 'add', 'localhost/e2e/list', 'localhost/e2e/app:arm64');
    const df = join(tmp, 'list.digest');
    await buildah('manifest', 'push', '--all', '--tls-verify=false', '--digestfile', df, 'localhost/e2e/list', `docker://${reg.host}/pb/multi:v1`);
    listDigest = readDigest(df);
    const served = await assertServes('pb/multi', 'v1', listDigest);
    const index = JSON.parse(served.body.toString()) as IndexManifest;
    assert.equal(served.mediaType, index.mediaType);
    assert.ok(index.mediaType === MT.ociIndex || index.mediaType === MT.dockerList, index.mediaType);
    assert.deepEqual(
      index.manifests.map((d) => d.platform),
      [
        { architecture: 'amd64', os: 'linux' },
        { architecture: 'arm64', os: 'linux', variant: 'v8' },
      ],
    );
    // the amd64 instance is the image pushed before, byte for byte
    assert.equal(index.manifests[0]!.digest, amd64Digest);
    for (const d of index.manifests) {
      const child = await getManifest('pb/multi', d.digest);
      assert.equal(child.status, 200);
      assert.equal(child.digest, d.digest);
      assert.equal(child.body.length, d.size);
      assert.equal(child.mediaType, d.mediaType);
      const m = JSON.parse(child.body.toString()) as ImageManifest;
      for (const b of [m.config, ...m.layers]) {
        const h = await fetch(`${reg.url}/v2/pb/multi/blobs/${b.digest}`, { method: 'HEAD' });
        assert.equal(h.status, 200, `blob ${b.digest} of ${d.platform?.architecture}`);
        assert.equal(h.headers.get('content-length'), String(b.size));
      }
    }
    const arm = index.manifests[1]!;
    const armInfo = JSON.parse((await run('skopeo', ['--override-arch', 'arm64', 'inspect', '--tls-verify=false', `docker://${reg.host}/pb/multi:v1`])).stdout) as { Architecture: string; Digest: string };
    assert.equal(armInfo.Architecture, 'arm64');
    assert.equal(armInfo.Digest, listDigest);

    await podman('pull', '-q', '--tls-verify=false', '--arch', 'arm64', `${reg.host}/pb/multi:v1`);
    const pulled = JSON.parse((await podman('image', 'inspect', `${reg.host}/pb/multi:v1`)).stdout) as Array<{ Architecture: string; RepoDigests: string[] }>;
    assert.equal(pulled[0]!.Architecture, 'arm64');
    assert.ok(pulled[0]!.RepoDigests.includes(`${reg.host}/pb/multi@${arm.digest}`), pulled[0]!.RepoDigests.join(' '));
  });

  test('podman manifest add --all from Berth + manifest push --all reproduces the same list', async () => {
    assert.ok(listDigest, 'needs the previous test');
    await podman('manifest', 'create', 'localhost/e2e/plist');
    await podman('manifest', 'add', '--all', '--tls-verify=false', 'localhost/e2e/plist', `docker://${reg.host}/pb/multi:v1`);
    const df = join(tmp, 'plist.digest');
    await podman('manifest', 'push', '--all', '--tls-verify=false', '--digestfile', df, 'localhost/e2e/plist', `docker://${reg.host}/pb/multi-copy:v1`);
    assert.equal(readDigest(df), listDigest);
    const served = await assertServes('pb/multi-copy', 'v1', listDigest);
    for (const d of (JSON.parse(served.body.toString()) as IndexManifest).manifests) {
      assert.equal((await getManifest('pb/multi-copy', d.digest)).digest, d.digest);
    }
  });

  test('podman search lists the catalog repositories', async () => {
    const catalog = (await (await fetch(`${reg.url}/v2/_catalog`)).json()) as { repositories: string[] };
    assert.deepEqual(catalog.repositories, ['pb/app', 'pb/app-copy', 'pb/multi', 'pb/multi-copy']);
    const all = (await podman('search', '--tls-verify=false', '--format', '{{.Name}}', `${reg.host}/`)).stdout.trim().split('\n');
    assert.deepEqual([...all].sort(), catalog.repositories.map((r) => `${reg.host}/${r}`));
    const some = (await podman('search', '--tls-verify=false', '--format', '{{.Name}}', `${reg.host}/pb/multi`)).stdout.trim().split('\n');
    assert.deepEqual([...some].sort(), [`${reg.host}/pb/multi`, `${reg.host}/pb/multi-copy`]);
  });
});
