/** Black-box tests of the push endpoints (end-4a, end-4b, end-5, end-6, end-11, end-13) over real HTTP. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { blob, errorCode, pushBlob, req, sha256 } from '../helpers/oci.ts';

let reg: RunningRegistry;
let base: string;
before(async () => {
  reg = await startBerth();
  base = reg.url;
});
after(async () => {
  await reg.stop();
});

async function start(name: string): Promise<string> {
  const r = await req(`${base}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  assert.equal(r.status, 202);
  const loc = r.headers.get('location');
  assert.ok(loc);
  assert.equal(r.headers.get('range'), '0-0');
  assert.match(r.headers.get('docker-upload-uuid') ?? '', /^[0-9a-f-]{36}$/);
  return new URL(loc, base).toString();
}

function withDigest(loc: string, digest: string): string {
  const u = new URL(loc);
  u.searchParams.set('digest', digest);
  return u.toString();
}

describe('push', () => {
  test('end-4a: POST then PUT with the whole body commits the blob', async () => {
    const b = blob('monolithic-two-step');
    const loc = await start('push/mono');
    const r = await req(withDigest(loc, b.digest), { method: 'PUT', body: b.data, headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('docker-content-digest'), b.digest);
    assert.match(r.headers.get('location') ?? '', new RegExp(`/v2/push/mono/blobs/${b.digest}$`));
    const g = await req(`${base}/v2/push/mono/blobs/${b.digest}`);
    assert.equal(g.status, 200);
    assert.deepEqual(g.body, b.data);
  });

  test('end-4b: single POST with ?digest= returns 201', async () => {
    const b = blob('single-post');
    const r = await req(`${base}/v2/push/single/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: b.data });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('docker-content-digest'), b.digest);
    assert.equal((await req(`${base}/v2/push/single/blobs/${b.digest}`, { method: 'HEAD' })).status, 200);
  });

  test('end-4b: single POST with a wrong digest returns DIGEST_INVALID and stores nothing', async () => {
    const b = blob('wrong');
    const other = sha256('other');
    const r = await req(`${base}/v2/push/wrong/blobs/uploads/?digest=${other}`, { method: 'POST', body: b.data });
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'DIGEST_INVALID');
    assert.equal((await req(`${base}/v2/push/wrong/blobs/${other}`, { method: 'HEAD' })).status, 404);
    const uploads = join(reg.root, 'docker/registry/v2/repositories/push/wrong/_uploads');
    assert.ok(!existsSync(uploads) || readdirSync(uploads).length === 0, 'no upload left behind');
  });

  test('end-5/end-6: chunked upload with Content-Range, status, final chunk on PUT', async () => {
    const data = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
    const b = blob(data);
    let loc = await start('push/chunked');
    const r1 = await req(loc, { method: 'PATCH', body: data.subarray(0, 10), headers: { 'Content-Range': '0-9', 'Content-Type': 'application/octet-stream' } });
    assert.equal(r1.status, 202);
    assert.equal(r1.headers.get('range'), '0-9');
    loc = new URL(r1.headers.get('location')!, base).toString();
    const st = await req(loc);
    assert.equal(st.status, 204, 'end-13: GET upload status');
    assert.equal(st.headers.get('range'), '0-9');
    const r2 = await req(loc, { method: 'PATCH', body: data.subarray(10, 20), headers: { 'Content-Range': '10-19' } });
    assert.equal(r2.status, 202);
    assert.equal(r2.headers.get('range'), '0-19');
    loc = new URL(r2.headers.get('location')!, base).toString();
    const r3 = await req(withDigest(loc, b.digest), { method: 'PUT', body: data.subarray(20), headers: { 'Content-Range': `20-${data.length - 1}` } });
    assert.equal(r3.status, 201);
    const g = await req(`${base}/v2/push/chunked/blobs/${b.digest}`);
    assert.deepEqual(g.body, data);
  });

  test('end-5: PATCH without Content-Range streams (as skopeo does), then PUT with an empty body', async () => {
    const b = blob(Buffer.alloc(300_000, 7));
    const loc = await start('push/stream');
    const r1 = await req(loc, { method: 'PATCH', body: b.data });
    assert.equal(r1.status, 202);
    assert.equal(r1.headers.get('range'), `0-${b.size - 1}`);
    const r2 = await req(withDigest(new URL(r1.headers.get('location')!, base).toString(), b.digest), { method: 'PUT', headers: { 'Content-Length': '0' } });
    assert.equal(r2.status, 201);
  });

  test('end-5: out-of-order chunk returns 416 RANGE_INVALID with the current Range', async () => {
    const loc = await start('push/order');
    await req(loc, { method: 'PATCH', body: Buffer.from('abcde'), headers: { 'Content-Range': '0-4' } });
    const r = await req(loc, { method: 'PATCH', body: Buffer.from('xyz'), headers: { 'Content-Range': '10-12' } });
    assert.equal(r.status, 416);
    assert.equal(errorCode(r.body), 'RANGE_INVALID');
    assert.equal(r.headers.get('range'), '0-4');
    const overlap = await req(loc, { method: 'PATCH', body: Buffer.from('xyz'), headers: { 'Content-Range': '3-5' } });
    assert.equal(overlap.status, 416);
    const st = await req(loc);
    assert.equal(st.headers.get('range'), '0-4', 'rejected chunks changed nothing');
  });

  test('end-5: malformed Content-Range returns 416', async () => {
    const loc = await start('push/badrange');
    const r = await req(loc, { method: 'PATCH', body: Buffer.from('abc'), headers: { 'Content-Range': 'bytes=oops' } });
    assert.equal(r.status, 416);
  });

  test('end-6: PUT with a wrong digest returns DIGEST_INVALID', async () => {
    const loc = await start('push/badput');
    const r = await req(withDigest(loc, sha256('something else')), { method: 'PUT', body: Buffer.from('content') });
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'DIGEST_INVALID');
  });

  test('end-6: PUT without digest or with a malformed digest returns DIGEST_INVALID', async () => {
    const loc = await start('push/nodigest');
    const r = await req(loc, { method: 'PUT', body: Buffer.from('x') });
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'DIGEST_INVALID');
    const r2 = await req(withDigest(loc, 'md5:abc'), { method: 'PUT', body: Buffer.from('x') });
    assert.equal(errorCode(r2.body), 'DIGEST_INVALID');
  });

  test('end-6: sha512 digests are accepted', async () => {
    const data = Buffer.from('sha512 content');
    const { createHash } = await import('node:crypto');
    const d = `sha512:${createHash('sha512').update(data).digest('hex')}`;
    const r = await req(`${base}/v2/push/sha512/blobs/uploads/?digest=${d}`, { method: 'POST', body: data });
    assert.equal(r.status, 201);
    const g = await req(`${base}/v2/push/sha512/blobs/${d}`);
    assert.deepEqual(g.body, data);
    assert.ok(existsSync(join(reg.root, `docker/registry/v2/blobs/sha512/${d.slice(7, 9)}/${d.slice(7)}/data`)));
  });

  test('end-13: unknown upload returns BLOB_UPLOAD_UNKNOWN', async () => {
    const r = await req(`${base}/v2/push/x/blobs/uploads/00000000-0000-4000-8000-000000000000`);
    assert.equal(r.status, 404);
    assert.equal(errorCode(r.body), 'BLOB_UPLOAD_UNKNOWN');
    const bad = await req(`${base}/v2/push/x/blobs/uploads/not-a-uuid`, { method: 'PATCH', body: 'x' });
    assert.equal(bad.status, 404);
  });

  test('upload DELETE cancels the session', async () => {
    const loc = await start('push/cancel');
    await req(loc, { method: 'PATCH', body: Buffer.from('abc') });
    assert.equal((await req(loc, { method: 'DELETE' })).status, 204);
    assert.equal((await req(loc)).status, 404);
  });

  test('a tampered _state token is rejected with BLOB_UPLOAD_INVALID', async () => {
    const loc = new URL(await start('push/state'));
    const token = loc.searchParams.get('_state')!;
    const raw = Buffer.from(token.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    raw[raw.length - 3] ^= 1;
    loc.searchParams.set('_state', raw.toString('base64').replace(/\+/g, '-').replace(/\//g, '_'));
    const r = await req(loc.toString(), { method: 'PATCH', body: 'x' });
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'BLOB_UPLOAD_INVALID');
  });

  test('end-11: mount from another repository returns 201; unknown blob falls back to 202', async () => {
    const b = blob('mount me');
    await pushBlob(base, 'mount/src', b);
    const r = await req(`${base}/v2/mount/dst/blobs/uploads/?mount=${b.digest}&from=mount/src`, { method: 'POST' });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('docker-content-digest'), b.digest);
    assert.equal((await req(`${base}/v2/mount/dst/blobs/${b.digest}`, { method: 'HEAD' })).status, 200);
    const link = readFileSync(join(reg.root, `docker/registry/v2/repositories/mount/dst/_layers/sha256/${b.digest.slice(7)}/link`), 'utf8');
    assert.equal(link, b.digest);
    const miss = await req(`${base}/v2/mount/dst2/blobs/uploads/?mount=${sha256('nope')}&from=mount/src`, { method: 'POST' });
    assert.equal(miss.status, 202);
    assert.ok(miss.headers.get('location'));
    const wrongFrom = await req(`${base}/v2/mount/dst3/blobs/uploads/?mount=${b.digest}&from=mount/other`, { method: 'POST' });
    assert.equal(wrongFrom.status, 202, 'blob not in from: new session');
  });

  test('end-11: mount without from succeeds when the registry has the blob', async () => {
    const b = blob('automount');
    await pushBlob(base, 'auto/src', b);
    const r = await req(`${base}/v2/auto/dst/blobs/uploads/?mount=${b.digest}`, { method: 'POST' });
    assert.equal(r.status, 201);
  });

  test('concurrent pushes of the same blob all succeed and store one copy', async () => {
    const b = blob(Buffer.alloc(200_000, 3));
    const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => req(`${base}/v2/same/r${i % 3}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: b.data })));
    for (const r of rs) assert.equal(r.status, 201);
    const g = await req(`${base}/v2/same/r0/blobs/${b.digest}`);
    assert.equal(sha256(g.body), b.digest);
  });

  test('the blob file appears only after commit (no partial blob is visible)', async () => {
    const b = blob('partial');
    const loc = await start('push/partial');
    await req(loc, { method: 'PATCH', body: b.data.subarray(0, 3) });
    assert.ok(!existsSync(join(reg.root, `docker/registry/v2/blobs/sha256/${b.digest.slice(7, 9)}/${b.digest.slice(7)}/data`)));
    assert.equal((await req(`${base}/v2/push/partial/blobs/${b.digest}`, { method: 'HEAD' })).status, 404);
  });
});
