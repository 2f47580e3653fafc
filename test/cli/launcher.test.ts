/**
 * bin/berth.cjs, what `npx berth` runs: it serves from the compiled dist/, and gives libuv's thread pool 16
 * threads unless the operator's UV_THREADPOOL_SIZE says otherwise. The pool's size is seen from outside as
 * the process's thread count once the pool has started (its first file operation starts every thread).
 */
import { readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';

function threads(r: RunningRegistry): number {
  return readdirSync(`/proc/${r.proc.pid}/task`).length;
}

/** Threads of a compiled Berth after an upload has touched the disk (so the pool is running). */
async function threadsWith(env: NodeJS.ProcessEnv): Promise<number> {
  const r = await startBerth({ compiled: true, env });
  try {
    const res = await fetch(`${r.url}/v2/launcher/test/blobs/uploads/`, { method: 'POST' });
    assert.equal(res.status, 202);
    await res.arrayBuffer();
    assert.equal((await fetch(`${r.url}/v2/`)).status, 200);
    return threads(r);
  } finally {
    await r.stop();
  }
}

describe('bin/berth.cjs', () => {
  it('serves with 16 libuv threads by default and honours UV_THREADPOOL_SIZE', async () => {
    const byDefault = await threadsWith({ UV_THREADPOOL_SIZE: undefined });
    const four = await threadsWith({ UV_THREADPOOL_SIZE: '4' });
    const two = await threadsWith({ UV_THREADPOOL_SIZE: '2' });
    assert.equal(four - two, 2, `2 more threads with a pool of 4 than of 2 (${four} vs ${two})`);
    assert.equal(byDefault - four, 12, `12 more threads by default than with a pool of 4 (${byDefault} vs ${four})`);
  });
});
