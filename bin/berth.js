#!/usr/bin/env -S node --max-semi-space-size=2 --heap-growing-percent=30
// A 2 MiB young generation keeps a busy registry process ~30 MiB smaller at no measured cost in throughput, and
// old-space limits 30% above the live heap (instead of up to 4x for a small heap) keep another ~10 MiB of
// garbage from piling up between full GCs under request load (docs/performance.md). Workers forked by
// `http.workers` get the same flags (PROCESS_FLAGS in src/cli/main.ts).
import '../dist/cli/main.js';
