/**
 * Black-box tests of `storage.cache.blobdescriptor`: two Berth processes over one filesystem root sharing one
 * redis-server (what several instances over S3 do), and one process with the in-memory cache. Pushes, deletes
 * and re-pushes through one instance must be answered correctly by the other.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { startRedis, type RunningRedis } from '../helpers/redis.ts';
import { blob, errorCode, pushBlob, pushImage, req, type Blob } from '../helpers/oci.ts';

function configYaml(root: string, cache: 'redis' | 'inmemory', redisAddr?: string): string {
  return `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: ${root}
  delete:
    enabled: true
  cache:
    blobdescriptor: ${cache}
    blobdescriptorsize: 1000
http:
  addr: 127.0.0.1:0
  secret: test-secret
${redisAddr ? `redis:\n  addr: ${redisAddr}\n  dialtimeout: 1s\n  readtimeout: 1s\n` : ''}`;
}

async function head(base: string, name: string, digest: string): Promise<number> {
  return (await req(`${base}/v2/${name}/blobs/${digest}`, { method: 'HEAD' })).status;
}

async function getBlob(base: string, name: string, b: Blob): Promise<void> {
  const r = await req(`${base}/v2/${name}/blobs/${b.digest}`);
  assert.equal(r.status, 200, `GET ${name}@${b.digest}: ${r.body.toString()}`);
  assert.deepEqual(r.body, b.data);
  assert.equal(r.headers.get('docker-content-digest'), b.digest);
}

async function expectUnknown(base: string, name: string, digest: string): Promise<void> {
  assert.equal(await head(base, name, digest), 404);
  const r = await req(`${base}/v2/${name}/blobs/${digest}`);
  assert.equal(r.status, 404);
  assert.equal(errorCode(r.body), 'BLOB_UNKNOWN');
}

async function del(base: string, name: string, digest: string): Promise<{ status: number; code: string | undefined }> {
  const r = await req(`${base}/v2/${name}/blobs/${digest}`, { method: 'DELETE' });
  return { status: r.status, code: errorCode(r.body) };
}

/** The path of a blob's layer link in distribution's filesystem layout. */
function linkPath(root: string, name: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return join(root, 'docker/registry/v2/repositories', name, '_layers', alg!, hex!, 'link');
}

describe('two instances sharing Redis', () => {
  let tmp: string;
  let root: string;
  let redis: RunningRedis;
  let raw: Redis;
  let a: RunningRegistry;
  let b: RunningRegistry;
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'berth-cache-'));
    root = join(tmp, 'data');
    redis = await startRedis();
    raw = redis.client();
    [a, b] = await Promise.all([
      startBerth({ root, configYaml: configYaml(root, 'redis', redis.addr) }),
      startBerth({ root, configYaml: configYaml(root, 'redis', redis.addr) }),
    ]);
  });
  after(async () => {
    const codes = await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
    rmSync(tmp, { recursive: true, force: true });
    assert.deepEqual(codes, [0, 0], 'both instances shut down cleanly, closing their Redis connection');
  });

  test('a blob pushed through A is described in Redis with distribution keys and served by B', async () => {
    const x = blob('shared blob '.repeat(100));
    await pushBlob(a.url, 'cache/one', x);
    assert.equal(await raw.sismember('repository::cache/one::blobs', x.digest), 1);
    assert.deepEqual(await raw.hgetall(`blobs::${x.digest}`), { digest: x.digest, size: String(x.size), mediatype: 'application/octet-stream' });
    assert.deepEqual(await raw.hgetall(`repository::cache/one::blobs::${x.digest}`), { mediatype: 'application/octet-stream' });
    const h = await req(`${b.url}/v2/cache/one/blobs/${x.digest}`, { method: 'HEAD' });
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('content-length'), String(x.size));
    assert.equal(h.headers.get('docker-content-digest'), x.digest);
    await getBlob(b.url, 'cache/one', x);
  });

  test('a HEAD that hits the cache reads no storage: B answers from Redis even with the link moved away', async () => {
    const y = blob('hit probe');
    await pushBlob(a.url, 'cache/probe', y);
    const link = linkPath(root, 'cache/probe', y.digest);
    renameSync(link, `${link}.away`);
    try {
      assert.equal(await head(b.url, 'cache/probe', y.digest), 200, 'answered from the cache');
    } finally {
      renameSync(`${link}.away`, link);
    }
  });

  test('delete through B, then A answers 404; re-push through other repositories and a mount, then B serves it', async () => {
    const x = blob('delete and come back '.repeat(50));
    await pushBlob(a.url, 'cache/two', x);
    assert.equal(await head(b.url, 'cache/two', x.digest), 200);
    assert.equal(await head(a.url, 'cache/two', x.digest), 200);

    assert.equal((await del(b.url, 'cache/two', x.digest)).status, 202);
    await expectUnknown(a.url, 'cache/two', x.digest);
    await expectUnknown(b.url, 'cache/two', x.digest);
    assert.equal(await raw.sismember('repository::cache/two::blobs', x.digest), 0);
    assert.deepEqual(await del(a.url, 'cache/two', x.digest), { status: 404, code: 'BLOB_UNKNOWN' });

    // The bytes stay in storage (as in distribution); linking them again elsewhere must not revive cache/two.
    await pushBlob(a.url, 'cache/three', x);
    await getBlob(b.url, 'cache/three', x);
    await expectUnknown(b.url, 'cache/two', x.digest);
    // A mount from cache/three links it into cache/two again.
    const m = await req(`${a.url}/v2/cache/two/blobs/uploads/?mount=${x.digest}&from=cache/three`, { method: 'POST' });
    assert.equal(m.status, 201);
    await getBlob(b.url, 'cache/two', x);
    // A mount from a repository the blob was deleted from is refused (an upload session starts instead).
    assert.equal((await del(b.url, 'cache/three', x.digest)).status, 202);
    const refused = await req(`${a.url}/v2/cache/four/blobs/uploads/?mount=${x.digest}&from=cache/three`, { method: 'POST' });
    assert.equal(refused.status, 202);
    await expectUnknown(b.url, 'cache/four', x.digest);
    await expectUnknown(a.url, 'cache/three', x.digest);
    await getBlob(a.url, 'cache/two', x);
  });

  test('a manifest needs its blobs: after a layer delete through B, A refuses the manifest; a re-push makes it valid', async () => {
    const img = await pushImage(a.url, 'cache/image', 'v1');
    assert.equal((await del(b.url, 'cache/image', img.layer.digest)).status, 202);
    const manifest = JSON.parse(img.body.toString()) as unknown;
    const put = await req(`${a.url}/v2/cache/image/manifests/v2`, { method: 'PUT', body: JSON.stringify(manifest), headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(put.status, 400);
    assert.equal(errorCode(put.body), 'MANIFEST_BLOB_UNKNOWN');
    await pushBlob(b.url, 'cache/image', img.layer);
    const again = await req(`${a.url}/v2/cache/image/manifests/v2`, { method: 'PUT', body: JSON.stringify(manifest), headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(again.status, 201);
    await getBlob(a.url, 'cache/image', img.layer);
  });

  test('a manifest deleted through B is gone for A, also through the blob endpoint', async () => {
    const img = await pushImage(a.url, 'cache/manifests', 'v1');
    const viaBlob = await req(`${b.url}/v2/cache/manifests/blobs/${img.digest}`);
    assert.equal(viaBlob.status, 200);
    const d = await req(`${b.url}/v2/cache/manifests/manifests/${img.digest}`, { method: 'DELETE' });
    assert.equal(d.status, 202);
    assert.equal((await req(`${a.url}/v2/cache/manifests/manifests/${img.digest}`)).status, 404);
    await expectUnknown(a.url, 'cache/manifests', img.digest);
  });

  test('with Redis down, reads and pushes are answered from storage, a delete is 503 and changes nothing', async () => {
    const x = blob('before the outage');
    await pushBlob(a.url, 'cache/outage', x);
    await redis.stop();
    for (let i = 0; i < 5; i++) await getBlob(a.url, 'cache/outage', x);
    const y = blob('during the outage');
    await pushBlob(b.url, 'cache/outage', y);
    await getBlob(a.url, 'cache/outage', y);
    assert.deepEqual(await del(a.url, 'cache/outage', x.digest), { status: 503, code: 'UNAVAILABLE' });
    await getBlob(b.url, 'cache/outage', x);
    const warnings = a.logs().split('\n').filter((l) => l.includes('blob descriptor cache error'));
    assert.ok(warnings.length >= 1 && warnings.length <= 2, `throttled warnings, got ${warnings.length}`);
    assert.match(warnings[0]!, /"level":40/);
  });
});

describe('one instance with the in-memory cache', () => {
  let reg: RunningRegistry;
  let tmp: string;
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'berth-cache-'));
    const root = join(tmp, 'data');
    reg = await startBerth({ root, configYaml: configYaml(root, 'inmemory') });
  });
  after(async () => {
    await reg?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('HEAD hits the cache; delete gives 404; re-push and mount serve correct data', async () => {
    const x = blob('in memory '.repeat(200));
    await pushBlob(reg.url, 'mem/one', x);
    const link = linkPath(reg.root, 'mem/one', x.digest);
    renameSync(link, `${link}.away`);
    assert.equal(await head(reg.url, 'mem/one', x.digest), 200, 'answered from the cache');
    renameSync(`${link}.away`, link);
    await getBlob(reg.url, 'mem/one', x);
    assert.equal((await del(reg.url, 'mem/one', x.digest)).status, 202);
    await expectUnknown(reg.url, 'mem/one', x.digest);
    await pushBlob(reg.url, 'mem/two', x);
    await expectUnknown(reg.url, 'mem/one', x.digest);
    const m = await req(`${reg.url}/v2/mem/one/blobs/uploads/?mount=${x.digest}&from=mem/two`, { method: 'POST' });
    assert.equal(m.status, 201);
    await getBlob(reg.url, 'mem/one', x);
    await getBlob(reg.url, 'mem/two', x);
  });
});
