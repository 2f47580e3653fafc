/**
 * Berth on the s3 driver, black-box over HTTP against a real S3-protocol server (s3rver): the storage layout
 * in the bucket is distribution's, chunked uploads become one object, blob reads redirect to presigned URLs
 * (followed by a real HTTP client) unless storage.redirect.disable, and deletes reach the bucket.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { startBerth, startS3, type RunningRegistry, type RunningS3 } from '../helpers/servers.ts';
import { blob, errorCode, pushImage, req, sha256 } from '../helpers/oci.ts';

let s3: RunningS3;
let reg: RunningRegistry;
let noRedirect: RunningRegistry;

const config = (rootdirectory: string, extraStorage = ''): string => `version: 0.1
log:
  level: info
storage:
${s3.storageYaml(rootdirectory)}  delete:
    enabled: true
${extraStorage}http:
  addr: 127.0.0.1:0
  secret: s3-test-secret
`;

async function keys(prefix: string): Promise<string[]> {
  const c = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.accesskey, secretAccessKey: s3.secretkey } });
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await c.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
    out.push(...(r.Contents ?? []).map((x) => x.Key!));
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  c.destroy();
  return out;
}

before(async () => {
  s3 = await startS3();
  reg = await startBerth({ configYaml: config('/berth-a') });
  noRedirect = await startBerth({ configYaml: config('/berth-b', '  redirect:\n    disable: true\n') });
});
after(async () => {
  await reg?.stop();
  await noRedirect?.stop();
  await s3?.stop();
});

describe('Berth on S3', () => {
  test("an image pushed over HTTP lands in the bucket in distribution's layout", async () => {
    const img = await pushImage(reg.url, 'team/app', 'v1');
    const all = await keys('berth-a/');
    const hex = (d: string): string => d.slice('sha256:'.length);
    for (const k of [
      `berth-a/docker/registry/v2/blobs/sha256/${hex(img.layer.digest).slice(0, 2)}/${hex(img.layer.digest)}/data`,
      `berth-a/docker/registry/v2/blobs/sha256/${hex(img.digest).slice(0, 2)}/${hex(img.digest)}/data`,
      `berth-a/docker/registry/v2/repositories/team/app/_layers/sha256/${hex(img.layer.digest)}/link`,
      `berth-a/docker/registry/v2/repositories/team/app/_manifests/revisions/sha256/${hex(img.digest)}/link`,
      `berth-a/docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link`,
      `berth-a/docker/registry/v2/repositories/team/app/_manifests/tags/v1/index/sha256/${hex(img.digest)}/link`,
    ]) {
      assert.ok(all.includes(k), `missing ${k} in ${all.join('\n')}`);
    }
    assert.ok(!all.some((k) => k.includes('/_uploads/')), 'finished uploads leave nothing behind');
    assert.ok(!all.some((k) => k.includes('~/')), 'no upload segments remain');
    const m = await req(`${reg.url}/v2/team/app/manifests/v1`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(m.status, 200);
    assert.equal(sha256(m.body), img.digest);
    assert.deepEqual((await req(`${reg.url}/v2/_catalog`)).json(), { repositories: ['team/app'] });
    assert.deepEqual((await req(`${reg.url}/v2/team/app/tags/list`)).json(), { name: 'team/app', tags: ['v1'] });
  });

  test('a chunked upload of 12 MiB in 5 PATCHes of uneven sizes becomes one blob object', async () => {
    const data = Buffer.alloc(12 * 1024 * 1024 + 321);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
    const b = blob(data);
    let loc = (await req(`${reg.url}/v2/chunked/repo/blobs/uploads/`, { method: 'POST' })).headers.get('location')!;
    const cuts = [0, 1000, 6 * 1024 * 1024, 6 * 1024 * 1024 + 10, 11 * 1024 * 1024, data.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const chunk = data.subarray(cuts[i], cuts[i + 1]);
      const r = await req(new URL(loc, reg.url).toString(), { method: 'PATCH', body: chunk, headers: { 'Content-Range': `${cuts[i]}-${cuts[i + 1]! - 1}`, 'Content-Type': 'application/octet-stream' } });
      assert.equal(r.status, 202);
      assert.equal(r.headers.get('range'), `0-${cuts[i + 1]! - 1}`);
      loc = r.headers.get('location')!;
    }
    const u = new URL(loc, reg.url);
    u.searchParams.set('digest', b.digest);
    assert.equal((await req(u.toString(), { method: 'PUT' })).status, 201);
    const hex = b.digest.slice('sha256:'.length);
    assert.deepEqual(await keys(`berth-a/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/`), [`berth-a/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`]);
    // Followed by a real HTTP client: fetch goes to the presigned URL and gets the bytes from the S3 server.
    const followed = await fetch(`${reg.url}/v2/chunked/repo/blobs/${b.digest}`);
    assert.equal(followed.status, 200);
    assert.ok(followed.redirected, 'the blob came through a redirect');
    assert.equal(sha256(Buffer.from(await followed.arrayBuffer())), b.digest);
    // A ranged read through the redirect.
    const ranged = await fetch(`${reg.url}/v2/chunked/repo/blobs/${b.digest}`, { headers: { Range: 'bytes=6291450-6291460' } });
    assert.equal(ranged.status, 206);
    assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(data.subarray(6291450, 6291461)));
  });

  test('blob GET and HEAD answer 307 to a presigned URL; the redirect can be disabled', async () => {
    const img = await pushImage(reg.url, 'redir/app', 'v1');
    for (const method of ['GET', 'HEAD']) {
      const r = await req(`${reg.url}/v2/redir/app/blobs/${img.layer.digest}`, { method });
      assert.equal(r.status, 307, method);
      const to = new URL(r.headers.get('location')!);
      assert.equal(to.origin, s3.endpoint);
      assert.match(to.search, /X-Amz-Signature=/);
      assert.match(to.search, /X-Amz-Expires=1200/);
      assert.equal(r.headers.get('docker-content-digest'), img.layer.digest);
    }
    // Unknown blobs are still 404 from the registry, not a redirect.
    const missing = await req(`${reg.url}/v2/redir/app/blobs/sha256:${'0'.repeat(64)}`);
    assert.equal(missing.status, 404);
    assert.equal(errorCode(missing.body), 'BLOB_UNKNOWN');

    const img2 = await pushImage(noRedirect.url, 'redir/app', 'v1');
    const direct = await req(`${noRedirect.url}/v2/redir/app/blobs/${img2.layer.digest}`);
    assert.equal(direct.status, 200);
    assert.equal(sha256(direct.body), img2.layer.digest);
  });

  test('a manifest delete and a blob delete reach the bucket; uploads can be cancelled', async () => {
    const img = await pushImage(reg.url, 'del/app', 'v1');
    assert.equal((await req(`${reg.url}/v2/del/app/manifests/${img.digest}`, { method: 'DELETE' })).status, 202);
    assert.equal((await req(`${reg.url}/v2/del/app/manifests/v1`)).status, 404);
    assert.deepEqual(await keys('berth-a/docker/registry/v2/repositories/del/app/_manifests/tags/'), []);
    assert.equal((await req(`${reg.url}/v2/del/app/blobs/${img.layer.digest}`, { method: 'DELETE' })).status, 202);
    assert.equal((await req(`${reg.url}/v2/del/app/blobs/${img.layer.digest}`, { method: 'HEAD' })).status, 404);
    const start = await req(`${reg.url}/v2/del/app/blobs/uploads/`, { method: 'POST' });
    const loc = new URL(start.headers.get('location')!, reg.url).toString();
    assert.equal((await req(loc, { method: 'PATCH', body: Buffer.alloc(1000, 1) })).status, 202);
    assert.equal((await req(loc, { method: 'DELETE' })).status, 204);
    assert.ok(!(await keys('berth-a/docker/registry/v2/repositories/del/app/')).some((k) => k.includes('_uploads')));
  });
});
