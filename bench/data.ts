/**
 * Test data generated in memory as streams: a fixed random 1 MiB pattern repeated, with a 64-byte header
 * derived from a seed so that blobs of the same size are distinct. Nothing larger than the pattern is ever
 * allocated; digests are computed by hashing the same slices the upload writes.
 */
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';

export const PATTERN_SIZE = 1024 * 1024;
const HEADER = 64;

/** Deterministic pseudo-random bytes (xorshift32), so every run and server sees the same data. */
function pseudoRandom(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe((size + 3) & ~3);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  return b.subarray(0, size);
}

export const PATTERN: Buffer = pseudoRandom(PATTERN_SIZE, 0x5eed1234);

/** Digests by `size:seed`, so that a blob generated again (for the other server) is not hashed again. */
const digests = new Map<string, string>();

/** A blob of `size` bytes: PATTERN repeated, its first 64 bytes replaced by a header naming `seed`. */
export class PatternBlob {
  readonly size: number;
  readonly seed: string;
  private readonly header: Buffer;
  private cachedDigest: string | undefined;

  constructor(size: number, seed: string) {
    this.size = size;
    this.seed = seed;
    const h = Buffer.from(PATTERN.subarray(0, HEADER));
    h.write(`berth-bench ${seed} ${size}`.slice(0, HEADER), 0, 'latin1');
    this.header = h;
  }

  /** The blob's bytes in [start, end) as slices of the pattern (no copies). */
  *slices(start = 0, end = this.size): Generator<Buffer> {
    let pos = start;
    while (pos < end) {
      if (pos < HEADER) {
        const e = Math.min(HEADER, end);
        yield this.header.subarray(pos, e);
        pos = e;
        continue;
      }
      const off = pos % PATTERN_SIZE;
      const e = Math.min(end, pos + (PATTERN_SIZE - off));
      yield PATTERN.subarray(off, off + (e - pos));
      pos = e;
    }
  }

  /** `sha256:<hex>`, computed once (outside any timing). */
  get digest(): string {
    if (this.cachedDigest === undefined) {
      const key = `${this.size}:${this.seed}`;
      let d = digests.get(key);
      if (d === undefined) {
        const h = createHash('sha256');
        for (const s of this.slices()) h.update(s);
        d = `sha256:${h.digest('hex')}`;
        digests.set(key, d);
      }
      this.cachedDigest = d;
    }
    return this.cachedDigest;
  }

  /** Writes [start, end) to `out` with backpressure; does not end it. */
  async writeTo(out: Writable, start = 0, end = this.size): Promise<void> {
    for (const s of this.slices(start, end)) {
      if (!out.write(s)) await drained(out);
    }
  }
}

/** Resolves on 'drain'; rejects when the stream closes or fails first. Leaves no listener behind. */
export function drained(out: Writable): Promise<void> {
  return new Promise((ok, fail) => {
    const cleanup = (): void => {
      out.off('drain', onDrain);
      out.off('close', onClose);
      out.off('error', onError);
    };
    const onDrain = (): void => {
      cleanup();
      ok();
    };
    const onClose = (): void => {
      cleanup();
      fail(new Error('stream closed while writing'));
    };
    const onError = (e: Error): void => {
      cleanup();
      fail(e);
    };
    out.on('drain', onDrain);
    out.on('close', onClose);
    out.on('error', onError);
  });
}

/** A small blob held in memory (configs, 4 KiB layers, manifests). */
export interface SmallBlob {
  data: Buffer;
  digest: string;
  size: number;
}

export function smallBlob(data: Buffer): SmallBlob {
  return { data, digest: `sha256:${createHash('sha256').update(data).digest('hex')}`, size: data.length };
}

/** `size` pseudo-random bytes distinct per seed. */
export function randomBlob(size: number, seed: number): SmallBlob {
  return smallBlob(pseudoRandom(size, seed * 2654435761));
}
