/**
 * The running upload hash: on its thread it equals crypto's sha256 of the same bytes, moves only chunks that
 * were given up and own their memory (copies the rest), holds writers back when the thread falls behind, and
 * reports a hash lost with its thread instead of a wrong digest.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { hashThreadRunning, newUploadHash, stopHashThread, THREAD_MAX_UPLOADS, THREAD_MIN } from './upload-hash.ts';
import { BlobStore } from './blobs.ts';
import { inmemoryDriver } from '../storage/memory.ts';
import { parseDigest } from '../spec/digest.ts';
import { parseRepoName } from '../spec/names.ts';

const sha256 = (bufs: Buffer[]): string => {
  const h = createHash('sha256');
  for (const b of bufs) h.update(b);
  return h.digest('hex');
};

test('the thread hash equals sha256 of the bytes; given-up chunks move, all others stay intact', async () => {
  const owned = Array.from({ length: 40 }, () => Buffer.from(randomBytes(64 * 1024)));
  const pooled = Array.from({ length: 40 }, (_, i) => Buffer.from(`pooled chunk ${i} `));
  const kept = Array.from({ length: 8 }, () => Buffer.from(randomBytes(64 * 1024)));
  const whole = kept[0]!.subarray(0); // another view of memory a kept chunk owns
  const all: Buffer[] = [];
  for (let i = 0; i < 40; i++) all.push(owned[i]!, pooled[i]!);
  all.push(...kept);
  const want = sha256(all);
  const pooledText = pooled.map((b) => b.toString());
  const keptCopies = kept.map((b) => Buffer.from(b));

  const h = newUploadHash();
  for (let i = 0; i < 40; i++) await h.update([owned[i]!, pooled[i]!], true);
  await h.update(kept, false);
  assert.equal(await h.digest(), want);
  assert.ok(owned.every((b) => b.length === 0), 'given-up chunks that own their memory moved to the thread');
  assert.deepEqual(
    pooled.map((b) => b.toString()),
    pooledText,
    'pooled chunks copied, never moved',
  );
  assert.ok(kept.every((b, i) => b.equals(keptCopies[i]!)), 'chunks not given up are left alone');
  assert.equal(whole.length, 64 * 1024);
});

test('small uploads, and uploads while the process writes several, are hashed inline', async () => {
  const body = [Buffer.from(randomBytes(THREAD_MIN - 1))];
  const want = sha256(body);
  const small = newUploadHash(THREAD_MIN - 1);
  const busy = newUploadHash(undefined, THREAD_MAX_UPLOADS + 1);
  const threaded = newUploadHash(undefined, THREAD_MAX_UPLOADS);
  for (const h of [small, busy, threaded]) assert.equal(h.update(body, false), undefined);
  // Only a hash on the thread is lost with it.
  await stopHashThread();
  assert.equal(await small.digest(), want);
  assert.equal(await busy.digest(), want);
  await assert.rejects(threaded.digest());
});

test('updates far ahead of the thread are held back until it catches up', async () => {
  const chunks = Array.from({ length: 256 }, () => Buffer.from(randomBytes(64 * 1024)));
  const want = sha256(chunks);
  const h = newUploadHash();
  let held = 0;
  const pending: Promise<void>[] = [];
  // 16 MiB posted without waiting: beyond the thread's allowance (a few MiB), updates return promises.
  for (const c of chunks) {
    const p = h.update([c], true);
    if (p) {
      held++;
      pending.push(p);
    }
  }
  assert.ok(held > 0, 'the writer was held back');
  await Promise.all(pending);
  assert.equal(await h.digest(), want);
});

test('a hash lost with its thread is reported, not guessed; a new hash starts a new thread', async () => {
  const h = newUploadHash();
  await h.update([Buffer.from(randomBytes(128 * 1024))], true);
  await stopHashThread();
  await assert.rejects(h.digest());
  const next = newUploadHash();
  const body = [Buffer.from(randomBytes(256 * 1024))];
  const want = sha256(body);
  await next.update(body, false);
  assert.equal(await next.digest(), want);
});

test('a dropped hash ignores later chunks and has no digest', async () => {
  const h = newUploadHash();
  h.drop();
  const c = Buffer.from(randomBytes(64 * 1024));
  assert.equal(h.update([c], true), undefined);
  assert.equal(c.length, 64 * 1024, 'a dropped hash moves nothing');
  await assert.rejects(h.digest());
  await stopHashThread();
});

test('the thread keeps a process alive only while an answer is outstanding', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-hash-exit-'));
  try {
    const script = join(dir, 'run.mts');
    const module = fileURLToPath(new URL('./upload-hash.ts', import.meta.url));
    // Nothing else keeps this process alive: it must print the digest (the thread held it until then), then exit.
    writeFileSync(script, `import { newUploadHash } from ${JSON.stringify(module)};\nconst h = newUploadHash();\nawait h.update([Buffer.alloc(3 << 20, 7)], false);\nconsole.log(await h.digest());\n`);
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.signal, null, 'the process exited by itself');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), createHash('sha256').update(Buffer.alloc(3 << 20, 7)).digest('hex'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the thread stops once no hash has been open on it for a while, never under an open one', async () => {
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const body = [Buffer.from(randomBytes(256 * 1024))];
  const open = newUploadHash();
  await open.update(body, false);
  await wait(2600);
  assert.ok(hashThreadRunning(), 'an upload between two PATCHes keeps its hash, and so the thread');
  assert.equal(await open.digest(), sha256(body));
  const dropped = newUploadHash();
  dropped.drop();
  await wait(2600);
  assert.equal(hashThreadRunning(), false, 'idle: stopped');
  const next = newUploadHash();
  await next.update(body, false);
  assert.ok(hashThreadRunning(), 'the next upload starts a new thread');
  assert.equal(await next.digest(), sha256(body));
});

test('a burst of opened upload sessions keeps the first bodies off the thread; a lone upload takes it', async () => {
  const store = new BlobStore(inmemoryDriver());
  const repo = parseRepoName('burst/repo');
  const body = Buffer.from(randomBytes(2 * THREAD_MIN));
  const digest = parseDigest(`sha256:${sha256([body])}`);
  await stopHashThread();

  // Sessions opened together, as a parallel push opens them before sending any layer.
  const burst = await Promise.all(Array.from({ length: THREAD_MAX_UPLOADS + 1 }, () => store.startUpload(repo)));
  await store.append(repo, burst[0]!.id, Readable.from([body]), { length: body.length });
  assert.equal(hashThreadRunning(), false, 'the first body of a burst is hashed inline');
  assert.equal(await store.complete(repo, burst[0]!.id, digest), body.length);
  for (const s of burst.slice(1)) await store.cancel(repo, s.id);

  // Finished and cancelled sessions no longer count: a lone upload is hashed on the thread, correctly.
  const lone = await store.startUpload(repo);
  await store.append(repo, lone.id, Readable.from([body]), { length: body.length });
  assert.equal(hashThreadRunning(), true, 'a lone large upload is hashed on the thread');
  assert.equal(await store.complete(repo, lone.id, digest), body.length);
  await stopHashThread();
});
