/**
 * The filesystem driver: distribution's layout on local disk.
 * Small files are replaced atomically (written under `<root>/.berth-tmp/`, fsync, rename into place, fsync of
 * the directory); writers fsync at commit; directories created on the way are flushed into their parents. So
 * anything acknowledged survives a crash or power loss, and a crash leaves temporary files in one place only,
 * where the next start sweeps them.
 */
import { type BigIntStats, constants as fsc, open as openCb, promises as fsp, statSync } from 'node:fs';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { sendFileRange } from './file-sender.ts';
import type { FileHandle } from 'node:fs/promises';
import { type FileInfo, type FileWriter, PathNotFoundError, type StorageDriver } from './driver.ts';

export interface FilesystemOptions {
  rootdirectory: string;
  /** fsync files and directories before acknowledging (default true). */
  fsync?: boolean;
  /** Small files (links, manifests) kept in memory, revalidated by a stat on every read (default 50,000). */
  smallFileCacheEntries?: number;
}

/** Bytes written between background flushes of a writer (2 MiB measured better than 8 for chunked pushes: the fsync before each 202 finds less left). */
const FLUSH_EVERY = 2 * 1024 * 1024;
/**
 * Upload bytes are written in writev calls of about WRITE_BATCH bytes while few uploads are open; the bytes
 * gathered by all open writers together stay within about GATHER_BUDGET (twice that with the batches being
 * written), so many concurrent uploads each gather less, down to MIN_BATCH (a socket chunk or so).
 */
const WRITE_BATCH = 1024 * 1024;
const GATHER_BUDGET = 2 * 1024 * 1024;
const MIN_BATCH = 64 * 1024;

/** Temporary files for atomic replacement live here, never beside the file they replace. */
export const TMP_DIR = '/.berth-tmp';

/** Temporary files older than this are left over from a crash (a write takes milliseconds). */
const STALE_TMP_MS = 15 * 60_000;

/** Files at most this large are kept in the small-file cache. */
const SMALL_FILE = 64 * 1024;

interface CachedFile {
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  data: Buffer;
}

/** What identifies a version of a file: a cached copy or a read in flight is used only while all four match. */
type FileVersion = Pick<CachedFile, 'ino' | 'size' | 'mtimeNs' | 'ctimeNs'>;

function sameFile(a: FileVersion, b: FileVersion): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

interface PendingStat {
  promise: Promise<BigIntStats | undefined>;
  resolve: (st: BigIntStats | undefined) => void;
  reject: (e: unknown) => void;
}

/**
 * Metadata lookups coalesced per path: each caller gets a `stat` that starts after it asked, and every caller
 * that asked before one starts shares it. The stats of a round run in the check phase of the event loop, after
 * the poll phase has read and dispatched every request that was ready; so a burst of requests for one tag costs
 * one `stat` per path and round instead of one per request. Each answer still reflects the file system as it was
 * after its request arrived, as a `stat` of its own would: a delete that finished before a request was sent is
 * seen by it, in this process or any other instance. (A `stat` costs 4–5 µs in a loop here, and measured
 * 6–15 µs between socket reads and writes in a loaded server: most of a manifest GET's cost.)
 */
function statCoalescer(): (file: string) => Promise<BigIntStats | undefined> {
  let pending = new Map<string, PendingStat>();
  const run = (): void => {
    const round = pending;
    pending = new Map();
    for (const [file, p] of round) {
      try {
        p.resolve(statSync(file, { bigint: true, throwIfNoEntry: false }));
      } catch (e) {
        p.reject(e);
      }
    }
  };
  return (file) => {
    let p = pending.get(file);
    if (!p) {
      if (pending.size === 0) setImmediate(run);
      let resolve!: PendingStat['resolve'];
      let reject!: PendingStat['reject'];
      const promise = new Promise<BigIntStats | undefined>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      p = { promise, resolve, reject };
      pending.set(file, p);
    }
    return p.promise;
  };
}

const openFd = promisify(openCb);

/** Attempts at a write whose directory a concurrent delete keeps removing. */
const RACE_RETRIES = 5;

function isEnoent(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'ENOENT';
}

function ignoreEnoent(e: unknown): void {
  if (!isEnoent(e)) throw e;
}

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}
/** Writes every byte of `bufs` (a short write is continued, so a full disk surfaces as ENOSPC); returns the count. */
async function writeAll(h: FileHandle, bufs: Buffer[]): Promise<number> {
  let total = 0;
  for (const b of bufs) total += b.length;
  let { bytesWritten: done } = await h.writev(bufs);
  if (done === total) return total;
  const all = Buffer.concat(bufs, total);
  while (done < total) {
    const n = (await h.write(all, done)).bytesWritten;
    if (n === 0) throw Object.assign(new Error('the file system accepted no bytes'), { code: 'EIO' });
    done += n;
  }
  return total;
}

const NOT_FOUND = new Set(['ENOENT', 'ENOTDIR', 'EISDIR']);

function mapError(e: unknown, path: string): never {
  if (NOT_FOUND.has((e as NodeJS.ErrnoException).code ?? '')) throw new PathNotFoundError(path);
  throw e;
}

async function fsyncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, fsc.O_RDONLY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

export function filesystemDriver(opts: FilesystemOptions): StorageDriver {
  const root = opts.rootdirectory;
  const durable = opts.fsync ?? true;
  const base = root.endsWith('/') ? root.slice(0, -1) : root;
  // Paths reach here validated by checkedDriver (absolute, no `.`/`..`), so concatenation is safe.
  const full = (p: string): string => base + p;
  const maxCached = opts.smallFileCacheEntries ?? 50_000;
  // Link files and manifests are read on every pull. A synchronous stat of a local file (coalesced, see
  // statCoalescer) costs microseconds, far less than the thread-pool round trips of open/fstat/read/close; the
  // cached bytes are used only while inode, size, mtime and ctime (in nanoseconds) are unchanged (every
  // putContent renames a new inode in).
  const small = new Map<string, CachedFile>();
  const statSoon = statCoalescer();
  const reading = new Map<string, { version: FileVersion; data: Promise<Buffer> }>();
  let openWriters = 0;

  const tmpDir = base + TMP_DIR;
  let tmpReady: Promise<unknown> | undefined;

  /** Creates a file's missing parents; each new directory's entry is flushed into its parent. */
  async function ensureParent(file: string): Promise<void> {
    const parent = dirname(file);
    let created: string | undefined;
    // A concurrent delete may remove a directory that mkdir -p just made; make the path again.
    for (let attempt = 1; ; attempt++) {
      try {
        created = await fsp.mkdir(parent, { recursive: true });
        break;
      } catch (e) {
        // Node's mkdir -p reports ENOTDIR when a directory it found existing is gone by the time it checks it.
        const code = (e as NodeJS.ErrnoException).code;
        if ((code !== 'ENOENT' && code !== 'ENOTDIR') || attempt >= RACE_RETRIES) throw e;
      }
    }
    if (created === undefined || !durable) return;
    // `created` is the topmost new directory. Its parent and every new directory but the last get an entry; the
    // last one's entries are flushed by the caller after its rename. A directory deleted meanwhile needs none.
    const flush = [dirname(created)];
    for (let d = dirname(parent); d.length >= created.length; d = dirname(d)) flush.push(d);
    await Promise.all(flush.map((d) => fsyncDir(d).catch(ignoreEnoent)));
  }

  /**
   * Renames `from` to `file`, making its parents. When a concurrent delete removes the parent between the two,
   * the parents are made again: the write then simply happened after the delete.
   */
  async function renameInto(from: string, file: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      await ensureParent(file);
      try {
        await fsp.rename(from, file);
        break;
      } catch (e) {
        if (!isEnoent(e) || attempt >= RACE_RETRIES || !(await exists(from))) throw e;
      }
    }
    // Gone again already: a delete that came after this write removed it, and there is nothing to flush.
    if (durable) await fsyncDir(dirname(file)).catch(ignoreEnoent);
  }

  /** Removes temporary files a crash left behind (only old ones: other instances may share the directory). */
  async function sweepTmp(): Promise<void> {
    const names = await fsp.readdir(tmpDir).catch(() => [] as string[]);
    const cutoff = Date.now() - STALE_TMP_MS;
    for (const n of names) {
      const f = `${tmpDir}/${n}`;
      const st = await fsp.stat(f).catch(() => undefined);
      if (st && st.mtimeMs < cutoff) await fsp.rm(f, { recursive: true, force: true });
    }
  }

  async function tmpFile(): Promise<string> {
    tmpReady ??= fsp.mkdir(tmpDir, { recursive: true }).then(() => {
      sweepTmp().catch(() => undefined);
    });
    await tmpReady;
    return `${tmpDir}/${randomBytes(8).toString('hex')}`;
  }

  return {
    name: 'filesystem',

    async getContent(path, o) {
      const max = o?.maxSize ?? 4 * 1024 * 1024;
      const file = full(path);
      let st;
      try {
        st = await statSoon(file);
      } catch (e) {
        return mapError(e, path);
      }
      if (!st || st.isDirectory()) throw new PathNotFoundError(path);
      const hit = small.get(file);
      if (hit && sameFile(hit, st)) return hit.data;
      if (st.size > max) throw new RangeError(`file ${path} is ${st.size} bytes, above the ${max} limit`);
      // Lookups that found the same file version share one read (a burst on a cold cache reads it once).
      let read = reading.get(file);
      if (!read || !sameFile(read.version, st)) {
        const r = { version: st, data: fsp.readFile(file) };
        reading.set(file, r);
        const done = (): void => {
          if (reading.get(file) === r) reading.delete(file);
        };
        r.data.then(done, done);
        read = r;
      }
      let data: Buffer;
      try {
        data = await read.data;
      } catch (e) {
        return mapError(e, path);
      }
      if (data.length > max) throw new RangeError(`file ${path} is ${data.length} bytes, above the ${max} limit`);
      if (data.length === Number(st.size) && data.length <= SMALL_FILE && maxCached > 0 && small.get(file)?.data !== data) {
        if (small.size >= maxCached) small.delete(small.keys().next().value as string);
        small.set(file, { ino: st.ino, size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, data });
      }
      return data;
    },

    async putContent(path, data) {
      const file = full(path);
      let tmp = await tmpFile();
      let h;
      try {
        h = await fsp.open(tmp, 'w');
      } catch (e) {
        // The temporary directory was removed under us: make it again, once.
        if (!isEnoent(e)) throw e;
        tmpReady = undefined;
        tmp = await tmpFile();
        h = await fsp.open(tmp, 'w');
      }
      try {
        await h.writeFile(data);
        if (durable) await h.sync();
      } catch (e) {
        await h.close();
        await fsp.rm(tmp, { force: true });
        throw e;
      }
      await h.close();
      try {
        await renameInto(tmp, file);
      } catch (e) {
        await fsp.rm(tmp, { force: true });
        throw e;
      }
    },

    async reader(path, offset = 0, o) {
      let h;
      try {
        h = await fsp.open(full(path), 'r');
      } catch (e) {
        return mapError(e, path);
      }
      let st;
      try {
        st = await h.stat();
      } catch (e) {
        await h.close();
        throw e;
      }
      if (st.isDirectory()) {
        await h.close();
        throw new PathNotFoundError(path);
      }
      const end = Math.min(o?.end ?? st.size - 1, st.size - 1);
      if (offset > end) {
        await h.close();
        return Readable.from([]);
      }
      return h.createReadStream({ start: offset, end, highWaterMark: o?.highWaterMark ?? 1024 * 1024 });
    },

    async writer(path, o): Promise<FileWriter> {
      const file = full(path);
      await ensureParent(file);
      const h = await fsp.open(file, o?.append ? 'a' : 'w');
      const initial = o?.append ? (await h.stat()).size : 0;
      openWriters++;
      let written = 0;
      // Flush in the background every FLUSH_EVERY bytes, so that the fsync before the acknowledgement
      // finds little left to write: disk writeback overlaps with receiving instead of following it.
      let unflushed = 0;
      let flushing: Promise<void> | undefined;
      let flushError: unknown;
      const progress = (n: number): void => {
        written += n;
        unflushed += n;
        if (durable && unflushed >= FLUSH_EVERY && !flushing) {
          unflushed = 0;
          flushing = h.datasync().then(
            () => {
              flushing = undefined;
            },
            (e: unknown) => {
              flushError = e;
              flushing = undefined;
            },
          );
        }
      };
      // Bytes are gathered into WRITE_BATCH-sized writev calls, the next batch filling while one is written:
      // a write per socket chunk (~64 KiB) cost a thread-pool round trip each and paused the socket often.
      // A plain Writable over the handle: fs.WriteStream with autoClose:false never emits 'close', which
      // stream.pipeline waits for; and we need the descriptor open after 'finish' to fsync it.
      let batch: Buffer[] = [];
      let batchBytes = 0;
      /** Every write queued so far, in order; a failed write fails all after it (the error sticks). */
      let tail: Promise<void> = Promise.resolve();
      /** Queues the gathered batch behind the writes before it; settles when the write before it is done. */
      const flush = (): Promise<void> => {
        const bufs = batch;
        batch = [];
        batchBytes = 0;
        const before = tail;
        // Written chunks go back to the caller (onWritten), which hashes and frees them; its promise is backpressure.
        tail = before.then(async () => {
          progress(await writeAll(h, bufs));
          await o?.onWritten?.(bufs);
        });
        // Observed by the next write, final(), destroy() or close(); until then not an unhandled rejection.
        tail.catch(() => undefined);
        return before;
      };
      const stream = new Writable({
        highWaterMark: 64 * 1024,
        write(chunk: Buffer, _enc, cb) {
          batch.push(chunk);
          batchBytes += chunk.length;
          if (batchBytes < Math.max(MIN_BATCH, Math.min(WRITE_BATCH, GATHER_BUDGET / openWriters))) return cb();
          // At most one batch written, one queued and one gathering: the next chunk waits for the write before.
          flush().then(() => cb(), cb);
        },
        final(cb) {
          if (batchBytes > 0) void flush();
          tail.then(() => cb(), cb);
        },
        destroy(err, cb) {
          // What was gathered but not queued is dropped; queued writes finish before the handle closes.
          batch = [];
          batchBytes = 0;
          tail.then(
            () => cb(err),
            () => cb(err),
          );
        },
      });
      let closed = false;
      /** Closes the handle after the queued writes (what was gathering and not queued is dropped). */
      const close = async (): Promise<void> => {
        if (closed) return;
        closed = true;
        openWriters--;
        if (!stream.destroyed && !stream.writableFinished) stream.destroy();
        await tail.catch(() => undefined);
        if (flushing) await flushing.catch(() => undefined);
        await h.close();
      };
      return {
        stream,
        size: () => initial + written,
        async commit() {
          try {
            if (flushing) await flushing;
            if (flushError) throw flushError;
            // fdatasync: the data and the size (what reading it back needs), without the timestamps.
            if (durable) await h.datasync();
          } catch (e) {
            // A failed commit still closes: the descriptor must not outlive the writer.
            await close().catch(() => undefined);
            throw e;
          }
          await close();
        },
        async cancel() {
          await close();
          await fsp.rm(file, { force: true });
        },
        async close() {
          // The client went away: the bytes already queued for the file are kept (a prefix it may resume from,
          // which the upload status reports once they are written); what was still gathering is dropped, so
          // nothing lands in the file after the client has seen its connection end.
          await close();
        },
        async discard() {
          await close().catch(() => undefined);
          if (o?.append) await fsp.truncate(file, initial);
          else await fsp.rm(file, { force: true });
        },
      };
    },

    async stat(path): Promise<FileInfo> {
      // Synchronous and coalesced, like getContent's: a metadata lookup costs microseconds, a thread-pool round
      // trip more (a page of a tag listing, which stats the tags directory, took 131 µs with it).
      let st;
      try {
        st = await statSoon(full(path));
      } catch (e) {
        return mapError(e, path);
      }
      if (!st) throw new PathNotFoundError(path);
      // Nanosecond times plus the link count (which counts subdirectories) and the inode.
      const version = `${st.ino}:${st.mtimeNs}:${st.ctimeNs}:${st.nlink}:${st.size}`;
      return { path, size: Number(st.size), modTime: new Date(Number(st.mtimeMs)), isDir: st.isDirectory(), version };
    },

    async list(path) {
      try {
        return await fsp.readdir(full(path));
      } catch (e) {
        return mapError(e, path);
      }
    },

    async move(src, dst) {
      const from = full(src);
      try {
        await renameInto(from, full(dst));
      } catch (e) {
        return mapError(e, src);
      }
    },

    async delete(path) {
      const p = full(path);
      try {
        await fsp.lstat(p);
      } catch (e) {
        return mapError(e, path);
      }
      // Out of the tree in one atomic rename, then removed: a recursive rm in place would race writers that
      // are creating entries inside the directory it is emptying (ENOTEMPTY, or their parent vanishing).
      const grave = await tmpFile();
      try {
        await fsp.rename(p, grave);
      } catch (e) {
        if (isEnoent(e)) return mapError(e, path);
        await fsp.rm(p, { recursive: true, force: true });
        return;
      }
      await fsp.rm(grave, { recursive: true, force: true });
    },

    async sendTo(path, dest, o) {
      // A raw descriptor (not a FileHandle, which would close itself on garbage collection);
      // sendFileRange owns and closes it.
      let fd: number;
      try {
        fd = await openFd(full(path), 'r');
      } catch (e) {
        return mapError(e, path);
      }
      o.onOpen?.();
      return sendFileRange(fd, o.start, o.end, dest);
    },

    async removeEmptyDir(path) {
      try {
        await fsp.rmdir(full(path));
        return true;
      } catch {
        // ENOTEMPTY, ENOENT, ENOTDIR: nothing to do; rmdir never removes an entry.
        return false;
      }
    },

    async redirectUrl() {
      return undefined;
    },
  };
}
