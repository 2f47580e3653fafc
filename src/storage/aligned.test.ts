import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { AlignedSlabs } from './aligned.ts';

const SLAB = 64 * 1024;

test('slabs are page-aligned, distinct and handed out at most count at a time', () => {
  const pool = new AlignedSlabs(SLAB, 4);
  const slabs = [pool.take(), pool.take(), pool.take(), pool.take()];
  assert.equal(pool.take(), undefined);
  for (const s of slabs) {
    assert.ok(s);
    assert.equal(s.length, SLAB);
    assert.equal(s.byteOffset % 4096, 0);
  }
  assert.equal(new Set(slabs.map((s) => s!.byteOffset)).size, 4);
  for (const s of slabs) pool.give(s!);
  assert.equal(pool.available(), 4);
});

test('the memory is let go once every slab has been back for the idle time, and not while one is out', async () => {
  const pool = new AlignedSlabs(SLAB, 2, 50);
  const a = pool.take()!;
  const b = pool.take()!;
  pool.give(b);
  await sleep(120);
  // One slab still out: the same memory serves.
  const b2 = pool.take()!;
  assert.equal(b2.buffer, a.buffer);
  pool.give(b2);
  pool.give(a);
  // Taken again within the idle time: still the same memory.
  const c = pool.take()!;
  assert.equal(c.buffer, a.buffer);
  pool.give(c);
  await sleep(120);
  const d = pool.take()!;
  assert.notEqual(d.buffer, a.buffer, 'a new memory after the pool was idle');
  assert.equal(pool.available(), 1);
  pool.give(d);
});

test('memory let go is collected at once, without waiting for V8 to need it', async () => {
  const pool = new AlignedSlabs(SLAB, 2, 50);
  let collected = false;
  const registry = new FinalizationRegistry(() => {
    collected = true;
  });
  // In a function of its own, so that no local here keeps a Buffer viewing the memory.
  ((): void => {
    const s = pool.take()!;
    registry.register(s.buffer, 'slabs');
    pool.give(s);
  })();
  for (let i = 0; i < 40 && !collected; i++) await sleep(25);
  assert.ok(collected, 'the pool memory was collected within 1 s of being let go');
});

test('idle slabs are kept while the pool says its users are busy, and let go after', async () => {
  let busy = true;
  const pool = new AlignedSlabs(SLAB, 2, 40, () => busy);
  const a = pool.take()!;
  const first = a.buffer;
  pool.give(a);
  await sleep(150);
  const b = pool.take()!;
  assert.equal(b.buffer, first, 'kept through several idle periods while busy');
  pool.give(b);
  busy = false;
  await sleep(150);
  const c = pool.take()!;
  assert.notEqual(c.buffer, first, 'let go once not busy');
  pool.give(c);
});
