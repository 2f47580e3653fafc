/** ByteLru: bounded by cost, least recent evicted first, and every value that leaves is reported once (onDrop). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteLru } from './byte-lru.ts';

test('values leaving by eviction, deletion or replacement are dropped once; a refresh drops nothing', () => {
  const dropped: string[] = [];
  const lru = new ByteLru<string>(3, () => 1, 3, (v) => dropped.push(v));
  lru.set('a', 'A');
  lru.set('b', 'B');
  lru.set('c', 'C');
  lru.get('a'); // a is now the most recent: b goes first
  lru.set('d', 'D');
  assert.deepEqual(dropped, ['B']);
  lru.set('c', 'C'); // the same value again: refreshed
  assert.deepEqual(dropped, ['B']);
  lru.set('c', 'C2'); // replaced
  lru.delete('a');
  lru.delete('a'); // already gone
  assert.deepEqual(dropped, ['B', 'C', 'A']);
  assert.equal(lru.size, 2);
  assert.equal(lru.peek('c'), 'C2');
  assert.equal(lru.peek('d'), 'D');
});
