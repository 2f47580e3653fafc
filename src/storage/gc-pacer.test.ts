/**
 * The GC pacer: on this Node it can reach V8's gc, and upload bytes taken in run a young-generation collection
 * (seen through perf_hooks' gc entries); bytes released never drive the held count below zero.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { pacing, release, take } from './gc-pacer.ts';

test('pacing is available and every paced cycle runs a minor GC', async () => {
  assert.equal(pacing().enabled, true, 'gc reachable through --expose-gc set at run time');
  const kinds: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) kinds.push((e as unknown as { detail: { kind: number } }).detail.kind);
  });
  obs.observe({ entryTypes: ['gc'] });
  const CYCLES = 10;
  try {
    // 64 KiB socket chunks, each written (released) soon after it arrived, as an upload does: 160 of them are
    // 10 MiB, past the 8 MiB pace, so each round ends in one paced collection in the next check phase. V8's own
    // scavenges need megabytes of JS allocation, which this loop does not make: ten minor GCs are the pacer's.
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      for (let i = 0; i < 160; i++) {
        take(64 * 1024);
        if (i >= 2) release(64 * 1024);
      }
      release(2 * 64 * 1024);
      await new Promise((ok) => setImmediate(ok));
    }
    await sleep(50);
    const minor = kinds.filter((k) => k === constants.NODE_PERFORMANCE_GC_MINOR).length;
    assert.ok(minor >= CYCLES, `a minor GC per paced cycle: ${minor} for ${CYCLES} (kinds seen: ${kinds.join(',') || 'none'})`);
  } finally {
    obs.disconnect();
  }
  assert.equal(pacing().held, 0);
  release(1024);
  assert.equal(pacing().held, 0, 'never below zero');
});
