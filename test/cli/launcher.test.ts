/**
 * bin/berth.cjs, what `npx berth` runs: it serves from the compiled dist/, and gives libuv's thread pool 16
 * threads unless the operator's UV_THREADPOOL_SIZE says otherwise. The pool's size is seen from outside as
 * the process's thread count once the pool has started (its first file operation starts every thread).
 * Its shebang also gives every process one glibc malloc arena, seen from outside in the memory map.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
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

/**
 * glibc's per-thread malloc arenas in a process's memory map: each is an anonymous read-write mapping at a
 * 64 MiB-aligned address followed by the inaccessible rest of its 64 MiB reservation (glibc's new_heap). The main
 * arena is `[heap]` and is not counted.
 */
function mallocArenas(pid: number): number {
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .map((l) => /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$/.exec(l))
    .filter((m) => m !== null)
    .map((m) => ({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3]!, anon: m[4] === '0' && m[5] === '' }));
  const heapMax = 64n << 20n;
  let n = 0;
  for (let i = 0; i + 1 < maps.length; i++) {
    const [rw, rest] = [maps[i]!, maps[i + 1]!];
    if (rw.anon && rest.anon && rw.perms.startsWith('rw') && rest.perms.startsWith('---') && rw.start % heapMax === 0n && rw.end === rest.start && rest.end - rw.start === heapMax) n++;
  }
  return n;
}

/** Arenas of each process of a Berth with two workers (the primary's first), after a few concurrent uploads. */
async function arenasWith(env: NodeJS.ProcessEnv, compiled = true): Promise<number[]> {
  const r = await startBerth({ compiled, env, extraYaml: '  workers: 2\n' });
  try {
    for (let i = 0; i < 300 && !r.logs().includes('"msg":"all workers listening"'); i++) await new Promise((ok) => setTimeout(ok, 100));
    const body = Buffer.alloc(1 << 20, 7);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const post = await fetch(`${r.url}/v2/launcher/arena${i}/blobs/uploads/`, { method: 'POST', headers: { connection: 'close' } });
        assert.equal(post.status, 202);
        const location = new URL(post.headers.get('location')!, r.url);
        location.searchParams.set('digest', digest);
        const put = await fetch(location, { method: 'PUT', body, headers: { 'content-type': 'application/octet-stream', connection: 'close' } });
        assert.equal(put.status, 201);
      }),
    );
    const pids = [r.proc.pid!, ...readFileSync(`/proc/${r.proc.pid}/task/${r.proc.pid}/children`, 'utf8').trim().split(/\s+/).map(Number)];
    assert.equal(pids.length, 2, `the primary and one worker: ${pids.join(' ')}`);
    return pids.map(mallocArenas);
  } finally {
    await r.stop();
  }
}

describe('bin/berth.cjs memory', () => {
  it('runs the primary and its workers on one malloc arena, unless GLIBC_TUNABLES says otherwise; workers also when started past the shebang', async () => {
    const byDefault = await arenasWith({ MALLOC_ARENA_MAX: undefined, GLIBC_TUNABLES: undefined });
    assert.deepEqual(byDefault, [0, 0], `no per-thread arenas: ${byDefault.join(', ')}`);
    const overridden = await arenasWith({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=8' });
    assert.ok(
      overridden.every((n) => n >= 1),
      `glibc's own arenas again with the operator's GLIBC_TUNABLES (so the count above can see them): ${overridden.join(', ')}`,
    );
    // Started as `node <script>`, past the shebang: the first process has glibc's default, its workers still one arena.
    const [primary, worker] = await arenasWith({ MALLOC_ARENA_MAX: undefined, GLIBC_TUNABLES: undefined }, false);
    assert.ok(primary! >= 1, `the primary started without the shebang has arenas: ${primary}`);
    assert.equal(worker, 0);
  });
});
