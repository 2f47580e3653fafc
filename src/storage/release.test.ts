/**
 * Releasing written upload chunks: a chunk that is the whole of its ArrayBuffer is freed at once (no GC),
 * and anything that shares its memory is left alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
