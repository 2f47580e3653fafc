/**
 * Releasing written upload chunks: a chunk that is the whole of its ArrayBuffer is freed at once (no GC),
 * anything that shares its memory is left alone, and the filesystem writer frees what it has written only
 * when its caller gave the chunks up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { filesystemDriver } from './filesystem.ts';
import { releaseChunk, releasing } from './release.ts';

test('a whole-buffer chunk is freed at once, without a GC', () => {
  assert.equal(releasing(), true, 'ArrayBuffer.prototype.transfer reachable on this Node');
  const chunks = Array.from({ length: 256 }, () => Buffer.allocUnsafeSlow(64 * 1024).fill(7));
  const before = process.memoryUsage().arrayBuffers;
  for (const c of chunks) releaseChunk(c);
  const after = process.memoryUsage().arrayBuffers;
  assert.ok(before - after >= 15 * 1024 * 1024, `16 MiB of chunks released: ArrayBuffer memory ${before} -> ${after}`);
  for (const c of chunks) assert.equal(c.length, 0);
});

test('memory another view shares is never released', () => {
  const whole = Buffer.allocUnsafeSlow(64 * 1024).fill(1);
  const head = whole.subarray(0, 1024);
  releaseChunk(head);
  const tail = whole.subarray(1024);
  releaseChunk(tail);
  assert.equal(whole.length, 64 * 1024);
  assert.equal(head.length, 1024);
  assert.equal(head[0], 1);
  // Small buffers may be slices of Node's shared allocation pool.
  const small = Buffer.from('a small pooled body chunk');
  const neighbour = Buffer.from('its neighbour in the pool');
  releaseChunk(small);
  assert.equal(small.toString(), 'a small pooled body chunk');
  assert.equal(neighbour.toString(), 'its neighbour in the pool');
});

test('the filesystem writer frees written chunks only when they were given up', async () => {
  const root = await mkdtemp(join(tmpdir(), 'berth-release-'));
  try {
    const d = filesystemDriver({ rootdirectory: root, fsync: false });
    for (const given of [true, false]) {
      const chunks = Array.from({ length: 64 }, () => Buffer.from(randomBytes(64 * 1024)));
      const want = createHash('sha256');
      for (const c of chunks) want.update(c);
      const w = await d.writer(`/f-${given}`, given ? { releaseWritten: true } : {});
      await pipeline(Readable.from(chunks), w.stream);
      await w.commit();
      const got = createHash('sha256').update(await readFile(join(root, `f-${given}`))).digest('hex');
      assert.equal(got, want.digest('hex'), 'every byte in the file');
      const freed = chunks.filter((c) => c.length === 0).length;
      assert.equal(freed, given ? chunks.length : 0, given ? 'each written chunk freed' : 'chunks left to their owner');
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
