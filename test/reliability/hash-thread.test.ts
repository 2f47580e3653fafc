/**
 * Uploads hashed on the hashing thread (src/registry/upload-hash.ts), over real HTTP against Berth in this
 * process: chunked and monolithic pushes verify their digests, and an upload whose running hash is lost with the
 * thread between two PATCHes still completes (re-hashed from storage), or is refused on a wrong digest.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startTestRegistry, type TestRegistry } from '../../src/testing/index.ts';
import { stopHashThread, THREAD_MIN } from '../../src/registry/upload-hash.ts';

const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('uploads hashed on the hashing thread', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startTestRegistry({ storage: 'filesystem' });
  });
  after(async () => {
    await reg?.close();
    await stopHashThread();
  });

  async function start(repo: string): Promise<string> {
    const r = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    assert.equal(r.status, 202);
    return new URL(r.headers.get('location')!, reg.url).toString();
  }

  async function patch(location: string, body: Buffer, from: number): Promise<string> {
    const r = await fetch(location, {
      method: 'PATCH',
      body,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${from}-${from + body.length - 1}` },
    });
    assert.equal(r.status, 202, await r.text());
    assert.equal(r.headers.get('range'), `0-${from + body.length - 1}`);
    return new URL(r.headers.get('location')!, reg.url).toString();
  }

  async function finish(location: string, digest: string, body?: Buffer): Promise<Response> {
    const u = new URL(location);
    u.searchParams.set('digest', digest);
    return fetch(u, { method: 'PUT', ...(body ? { body, headers: { 'Content-Type': 'application/octet-stream' } } : {}) });
  }

  async function pulled(repo: string, digest: string): Promise<Buffer> {
    const r = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`);
    assert.equal(r.status, 200);
    return Buffer.from(await r.arrayBuffer());
  }

  test('chunked and monolithic pushes of large blobs verify their digests', async () => {
    const parts = [randomBytes(3 * THREAD_MIN), randomBytes(THREAD_MIN + 17), randomBytes(5)];
    const whole = Buffer.concat(parts);
    let loc = await start('hash/chunked');
    let at = 0;
    for (const p of parts) {
      loc = await patch(loc, p, at);
      at += p.length;
    }
    const done = await finish(loc, digestOf(whole));
    assert.equal(done.status, 201, await done.text());
    assert.ok((await pulled('hash/chunked', digestOf(whole))).equals(whole));

    const mono = randomBytes(4 * THREAD_MIN + 3);
    const put = await finish(await start('hash/mono'), digestOf(mono), mono);
    assert.equal(put.status, 201, await put.text());
    assert.ok((await pulled('hash/mono', digestOf(mono))).equals(mono));

    const wrong = await finish(await start('hash/mono'), digestOf(Buffer.from('something else')), randomBytes(2 * THREAD_MIN));
    assert.equal(wrong.status, 400);
    assert.equal(((await wrong.json()) as { errors: { code: string }[] }).errors[0]!.code, 'DIGEST_INVALID');
  });

  test('an upload whose running hash was lost with the thread is re-hashed from storage', async () => {
    const a = randomBytes(2 * THREAD_MIN);
    const b = randomBytes(2 * THREAD_MIN);
    const whole = Buffer.concat([a, b]);
    let loc = await start('hash/lost');
    loc = await patch(loc, a, 0);
    await stopHashThread();
    loc = await patch(loc, b, a.length);
    const done = await finish(loc, digestOf(whole));
    assert.equal(done.status, 201, await done.text());
    assert.equal(done.headers.get('docker-content-digest'), digestOf(whole));
    assert.ok((await pulled('hash/lost', digestOf(whole))).equals(whole));

    // The same loss, and a digest that does not match: refused, never stored.
    let bad = await start('hash/lost');
    bad = await patch(bad, a, 0);
    await stopHashThread();
    const refused = await finish(bad, digestOf(b));
    assert.equal(refused.status, 400);
    assert.equal((await fetch(`${reg.url}/v2/hash/lost/blobs/${digestOf(b)}`, { method: 'HEAD' })).status, 404);
  });
});
