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

function loadTransfer(): Transfer | undefined {
  if (process.env.BERTH_RELEASE_CHUNKS === '0') return undefined;
  const native = (ArrayBuffer.prototype as { transfer?: unknown }).transfer;
  if (typeof native === 'function') return native as Transfer;
  try {
    setFlagsFromString('--harmony-rab-gsab-transfer');
    const fn: unknown = runInNewContext('ArrayBuffer.prototype.transfer');
    if (typeof fn !== 'function') return undefined;
    // Proven on a throwaway buffer before it is trusted with uploads.
    const probe = new ArrayBuffer(MIN_RELEASE);
    (fn as Transfer).call(probe, 0);
    return probe.byteLength === 0 ? (fn as Transfer) : undefined;
  } catch {
    return undefined;
  }
}

/** The transfer function, loaded on first need (null: not tried yet; undefined: unavailable). */
let transfer: Transfer | undefined | null = null;

/** Releases `chunk`'s memory if it is the whole of its ArrayBuffer; the Buffer then reads as empty. */
export function releaseChunk(chunk: Buffer): void {
  const ab = chunk.buffer;
  if (chunk.byteOffset !== 0 || chunk.byteLength !== ab.byteLength || ab.byteLength < MIN_RELEASE) return;
  if (transfer === null) transfer = loadTransfer();
  if (!transfer) return;
  try {
    transfer.call(ab as ArrayBuffer, 0);
  } catch {
    // Not detachable (a SharedArrayBuffer, a buffer some native code pinned): the GC frees it later.
  }
}

/** Whether chunks can be released here: for tests and diagnostics. */
export function releasing(): boolean {
  if (transfer === null) transfer = loadTransfer();
  return transfer !== undefined;
}
