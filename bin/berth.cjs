#!/usr/bin/env -S MALLOC_ARENA_MAX=1 node --max-semi-space-size=2 --heap-growing-percent=30
// A 2 MiB young generation keeps a busy registry process ~30 MiB smaller at no measured cost in throughput, and
// old-space limits 30% above the live heap (instead of up to 4x for a small heap) keep another ~10 MiB of
// garbage from piling up between full GCs under request load (docs/performance.md). Workers forked by
// `http.workers` get the same flags (PROCESS_FLAGS in src/cli/main.ts).
//
// MALLOC_ARENA_MAX=1: glibc gives each thread that allocates (V8's GC helpers, the thread pool) an arena of its
// own, and each kept ~1.5 MiB of a burst's freed memory resident for good; one shared arena keeps a process
// ~7 MiB smaller after 32 concurrent pushes, at the same throughput (docs/performance.md). glibc reads it only at
// start, hence here; forked workers inherit it. GLIBC_TUNABLES=glibc.malloc.arena_max=N overrides it.
//
// CommonJS on purpose: libuv sizes its thread pool (file reads, writes and fsyncs) from UV_THREADPOOL_SIZE
// the first time the pool is used, and Node's ES module loader uses it before any module of ours runs. This
// file runs first and loads nothing asynchronously, so the default set here still counts. 16 threads instead
// of libuv's 4 let concurrent pushes' writes and fsyncs proceed side by side (docs/performance.md); an
// operator's own UV_THREADPOOL_SIZE wins, and forked workers inherit it through the environment.
'use strict';
if (process.env.UV_THREADPOOL_SIZE === undefined) process.env.UV_THREADPOOL_SIZE = '16';
import('../dist/cli/main.js').catch((e) => {
  process.stderr.write(`berth: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
