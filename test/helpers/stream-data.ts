/** Deterministic large bodies generated as streams (never held in memory), with their digest. */
import { createHash, randomBytes } from 'node:crypto';

const BLOCK = 1024 * 1024;

/** A generator yielding `size` bytes made of a seeded 1 MiB block with a per-block counter. */
export function* bytes(size: number, seed: Buffer, from = 0, to = size): Generator<Buffer> {
  let off = from - (from % BLOCK);
  while (off < to) {
    const blk = Buffer.from(seed);
    blk.writeUInt32BE(off / BLOCK, 0);
    const s = Math.max(from - off, 0);
    const e = Math.min(to - off, BLOCK);
    yield blk.subarray(s, e);
    off += BLOCK;
  }
}

export function newSeed(): Buffer {
  return randomBytes(BLOCK);
}

export function digestOfBytes(size: number, seed: Buffer): string {
  const h = createHash('sha256');
  for (const b of bytes(size, seed)) h.update(b);
  return `sha256:${h.digest('hex')}`;
}

/** A web ReadableStream over `bytes()` for fetch bodies. */
export function webStream(size: number, seed: Buffer, from = 0, to = size): ReadableStream<Uint8Array> {
  const it = bytes(size, seed, from, to);
  return new ReadableStream<Uint8Array>({
    pull(ctrl) {
      const n = it.next();
      if (n.done) ctrl.close();
      else ctrl.enqueue(n.value);
    },
  });
}
