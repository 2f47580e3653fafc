/**
 * Frees a written upload chunk's memory at once, instead of when V8 next collects its JS wrapper.
 *
 * Node's HTTP parser hands each request-body chunk to JavaScript as a fresh copy (up to 64 KiB) that only that
 * chunk's Buffer views. A push allocates almost nothing else on the JS heap, so scavenges come rarely and dead
 * chunks piled up to tens of MiB per process (glibc then keeps that peak resident). Once a chunk is in the file
 * nothing needs it: detaching its ArrayBuffer (`ArrayBuffer.prototype.transfer(0)`) hands the memory back to
 * the allocator right away.
 *
 * Node 20's V8 has `transfer` behind `--harmony-rab-gsab-transfer`: the flag is set at run time and the function
 * taken from a fresh context, whose builtins see it (the main context's were installed before). It works on an
 * ArrayBuffer of any context. Where neither is available, release does nothing and V8 frees chunks as before.
 *
 * Only a chunk that is the whole of its ArrayBuffer is released, so no other view can lose its bytes; and only
 * a writer whose caller declared that it gives up the chunks (a request body nobody else reads) releases them.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Transfer = (this: ArrayBuffer, newLength?: number) => ArrayBuffer;

/** Smaller chunks may share Node's 8 KiB allocation pool; they are left to the GC. */
const MIN_RELEASE = 16 * 1024;

/** An mmap()ed block this large, freed, sets glibc's trim threshold to twice its size (mallopt(3)). */
const TRIM_PROBE = 4 * 1024 * 1024;

/** `ArrayBuffer.prototype.transfer`: native where V8 ships it, else from a fresh context after its flag. */
function findTransfer(): Transfer | undefined {
  const native = (ArrayBuffer.prototype as { transfer?: unknown }).transfer;
  if (typeof native === 'function') return native as Transfer;
  setFlagsFromString('--harmony-rab-gsab-transfer');
  const fn: unknown = runInNewContext('ArrayBuffer.prototype.transfer');
  return typeof fn === 'function' ? (fn as Transfer) : undefined;
}

/**
 * The transfer function, proven by freeing one 4 MiB buffer before it is trusted with uploads. That one free
 * also matters in itself: freed chunks go back to glibc's heap, which returns its top to the kernel whenever
 * more than 128 KiB is free there, so between the PATCHes of a chunked push the heap shrank and was faulted back
 * in. glibc raises the threshold to twice the size of an mmap()ed block when one is freed, so this free sets it
 * to 8 MiB. Measured, `npm run bench -- --only chunked --runs 5`: 68% of bare Node without, 80% with
 * MALLOC_TRIM_THRESHOLD_=8388608 (the same effect).
 */
function loadTransfer(): Transfer | undefined {
  if (process.env.BERTH_RELEASE_CHUNKS === '0') return undefined;
  try {
    const fn = findTransfer();
    if (!fn) return undefined;
    const probe = Buffer.allocUnsafeSlow(TRIM_PROBE);
    probe.fill(0, 0, 1);
    fn.call(probe.buffer as ArrayBuffer, 0);
    return probe.byteLength === 0 ? fn : undefined;
  } catch {
    return undefined;
  }
}

/** The transfer function, loaded on first need (null: not tried yet; undefined: unavailable). */
let transfer: Transfer | undefined | null = null;

function reach(): Transfer | undefined {
  if (transfer === null) transfer = loadTransfer();
  return transfer;
}

/**
 * Whether `chunk` alone views its memory, as far as can be told: the whole of an ArrayBuffer (not shared between
 * threads) too large to come from Node's allocation pool. Only such a chunk may be freed or moved to a thread.
 */
export function ownsItsMemory(chunk: Buffer): boolean {
  const ab = chunk.buffer;
  return ab instanceof ArrayBuffer && chunk.byteOffset === 0 && chunk.byteLength === ab.byteLength && ab.byteLength >= MIN_RELEASE;
}

/** Releases `chunk`'s memory if it is the whole of its ArrayBuffer; the Buffer then reads as empty. */
export function releaseChunk(chunk: Buffer): void {
  if (!ownsItsMemory(chunk)) return;
  const ab = chunk.buffer;
  const fn = reach();
  if (!fn) return;
  try {
    fn.call(ab as ArrayBuffer, 0);
  } catch {
    // Not detachable (a SharedArrayBuffer, a buffer some native code pinned): the GC frees it later.
  }
}

/** Whether chunks can be released here: for tests and diagnostics. */
export function releasing(): boolean {
  return reach() !== undefined;
}

/** V8's `gc()`, taken from a fresh context once `--expose-gc` is set (null: not tried yet; undefined: unavailable). */
let gcFn: (() => void) | undefined | null = null;

/**
 * Runs a full garbage collection now. For memory only a collection can free and nothing else will collect
 * soon: a WebAssembly memory cannot be detached, so a dropped one stays resident until V8 next runs a full GC,
 * which an idle process may never do (32 concurrent pushes, three rounds: each round's slab pool, dropped once
 * idle, stayed beside the next round's, +8 MiB per round). The flag is set at run time and the function taken
 * from a fresh context, as for `transfer` above; the main context gets no `gc` global. It blocks the process:
 * 11 ms on a registry process just after a burst of pushes, 104–110 ms in the middle of 32 concurrent ones, so
 * it is for rare events (a pool let go once no upload is open), never per request.
 */
export function collectGarbage(): boolean {
  if (gcFn === null) {
    try {
      setFlagsFromString('--expose-gc');
      const fn: unknown = runInNewContext('gc');
      gcFn = typeof fn === 'function' ? (fn as () => void) : undefined;
    } catch {
      gcFn = undefined;
    }
  }
  if (!gcFn) return false;
  gcFn();
  return true;
}
