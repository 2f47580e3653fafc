/**
 * Paces V8's young-generation collections by upload bytes, to bound the memory a large push leaves behind.
 *
 * Every socket read of a request body is a fresh 64 KiB buffer whose memory is freed only when V8 collects its
 * small JS wrapper. A push allocates almost nothing else on the JS heap, so the young generation fills slowly and
 * scavenges come rarely: dead body buffers piled up to ~35 MiB per process before V8's external-memory
 * pressure collected them, and glibc kept that peak as resident memory (VmHWM 57 → 95 MiB for one push).
 *
 * So the writers report the bytes they take in and let go of, and after every PACE bytes taken in (at least
 * twice what is still held, so that a buffer still waiting for its write is seen by at most one scavenge and is
 * not promoted to the old generation, where only a full collection would free it) a minor GC runs. It costs a
 * fraction of a millisecond, as only the few live buffers are copied; measured, pushes did not get slower.
 *
 * `gc` comes from a fresh context after `--expose-gc` is set at run time, which leaves the main context's
 * globals alone. Where that is unavailable pacing is simply off.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = (options: { type: 'minor' | 'major' }) => void;

/** Bytes taken in between paced minor GCs, at least. */
const PACE = 8 * 1024 * 1024;
/** An mmap()ed block this large, freed, sets glibc's trim threshold to twice its size. */
const TRIM_PROBE = 4 * 1024 * 1024;

function loadGc(): Gc | undefined {
  if (process.env.BERTH_GC_PACING === '0') return undefined;
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    if (typeof gc !== 'function') return undefined;
    raiseTrimThreshold(gc as Gc);
    return gc as Gc;
  } catch {
    return undefined;
  }
}

/**
 * glibc returns the top of its heap to the kernel when more than M_TRIM_THRESHOLD (128 KiB) is free there, and
 * a paced scavenge frees megabytes at once: the heap shrank and grew back on every cycle, and faulting its pages
 * in again cost more CPU than the push itself saved. glibc raises the threshold to twice the size of an
 * mmap()ed block when such a block is freed (mallopt(3), "dynamic mmap threshold"); freeing one 4 MiB buffer
 * so sets it to 8 MiB, without environment variables. Measured on a 512 MiB push: 101–129 CPU ticks per push
 * paced, 129–165 unpaced, 186–239 paced without this. A larger probe (16 MiB) pushed as fast but kept a burst of
 * concurrent uploads' freed heap resident, so that the next load added to it (one process, 32 concurrent
 * pushes then `wrk` on `/v2/`: VmHWM 111–115 MiB, against 104–106 with 4 MiB).
 */
function raiseTrimThreshold(gc: Gc): void {
  let b: Buffer | undefined = Buffer.allocUnsafeSlow(TRIM_PROBE);
  b.fill(0, 0, 1);
  b = undefined;
  gc({ type: 'major' });
}

/** V8's gc, loaded on first need (null: not tried yet; undefined: unavailable). */
let gc: Gc | undefined | null = null;
function reachGc(): Gc | undefined {
  if (gc === null) gc = loadGc();
  return gc;
}
let held = 0;
let sinceGc = 0;
let scheduled = false;

function collect(): void {
  scheduled = false;
  sinceGc = 0;
  gc?.({ type: 'minor' });
}

/** `n` bytes of a request body were taken in and are held until written. */
export function take(n: number): void {
  held += n;
  sinceGc += n;
  if (scheduled || sinceGc < PACE || sinceGc < 2 * held || !reachGc()) return;
  scheduled = true;
  setImmediate(collect);
}

/** `n` bytes taken in earlier were written or dropped. */
export function release(n: number): void {
  held = Math.max(0, held - n);
}

/** Whether pacing is on (V8's gc could be had), and the bytes held now: for tests and diagnostics. */
export function pacing(): { enabled: boolean; held: number } {
  return { enabled: reachGc() !== undefined, held };
}
