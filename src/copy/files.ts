/** File helpers shared by the local endpoints: durable atomic writes and a hashing pass-through. */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { join } from 'node:path';
import type { Hash } from 'node:crypto';

/** fsyncs a directory so a rename or create inside it survives a crash (ignored where unsupported). */
export async function fsyncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    await fh?.close();
  }
}

/** A unique temporary name inside `dir`. */
export function tempName(dir: string, prefix: string): string {
  return join(dir, `${prefix}${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** Writes `data` to `path` atomically: a temporary file in `tmpDir` (same filesystem), fsync, rename, fsync dir. */
export async function writeFileAtomic(path: string, data: Buffer | string, tmpDir: string, dir: string): Promise<void> {
  const tmp = tempName(tmpDir, '.tmp-');
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fsyncDir(dir);
}

/** A pass-through that feeds every chunk to `hash` and counts the bytes; fails past `max` bytes. */
export class HashTap extends Transform {
  bytes = 0;
  constructor(
    private readonly hash: Hash,
    private readonly onBytes?: (total: number) => void,
    private readonly max: number = Number.MAX_SAFE_INTEGER,
    private readonly tooLong: () => Error = () => new Error(`more than ${max} bytes`),
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.bytes + chunk.length > this.max) {
      cb(this.tooLong());
      return;
    }
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    cb(null, chunk);
  }
}

/** A per-key promise chain: `run(key, fn)` runs after every earlier `run` of the same key settled. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}
