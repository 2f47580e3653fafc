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
import { type ContentWrite, type FileInfo, type FileWriter, PathNotFoundError, type StorageDriver, type WriterOptions } from './driver.ts';
import { AlignedSlabs } from './aligned.ts';

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

/**
 * Uploads are written with O_DIRECT through page-aligned slabs of this size, so that their bytes go to the
 * device without passing through the page cache. Measured here (2-core VM with free page reporting, ext4 on
 * virtio-blk): writing through the page cache costs either ~25 or 180–290 ticks of kernel CPU per GiB, and
 * which one depends on whether the host still backs the free pages the kernel hands out (after a few GiB
 * written, it mostly does not: one process, 1 GiB pushes in a row, buffered 734–826 MB/s for the first three,
 * then 273–370 at 246–357 kernel ticks each); direct writes cost 50–70 in every run. ext4 serialises direct
 * writes that extend a file (each holds the inode lock until the device has the bytes), so a writer has one
 * write in flight and the slabs filled meanwhile go down together in one `pwritev`; and it flushes in the
 * background as it goes, like the buffered writer (the device's cache, and the host's, took 0.6 s to flush
 * a 1 GiB push written without). Same run of pushes: direct 501–670 MB/s throughout. An upload announced
 * below a slab goes through the page cache: a device round trip would be all its cost.
 */
const DIRECT_SLAB = 1024 * 1024;
/** Slabs for a direct writer while the pool has room for two such (one filling, the others being written), and at least. */
const DIRECT_SLABS = 4;
const DIRECT_MIN_SLABS = 2;
/**
 * Slabs per process (8 MiB): three or four direct writers at once; more uploads at once are written through
 * the page cache. With 16 slabs, 32 concurrent pushes held the summed peak RSS of the bench's two processes at
 * 209 MiB against 191 with 8, at the same aggregate rate (`/tmp`-style curl pushes 258–273 vs 249–264 MB/s;
 * bench concurrent 435 vs 412 MB/s, inside its run-to-run spread of 1.3–1.4). Smaller slabs for more direct
 * writers (32 or 64 of 256 KiB) did no better: bench concurrent 523 and 564 against 589 MB/s.
 */
const directSlabs = new AlignedSlabs(DIRECT_SLAB, 8, 2000, () => openWriters > 0);
/**
 * Upload writers open in this process, over every filesystem driver: what the gather budget is shared by,
 * whether a new upload is opened beside another (then O_DIRECT), and whether the slab pool may be let go.
 * Idle slabs in the middle of a burst (its direct writers done, the rest on the page cache) were let go and cut
 * again for the next burst each time, and letting go costs a full GC, ~100 ms under that load.
 */
let openWriters = 0;
/** Alignment of O_DIRECT offsets, lengths and addresses: the largest logical block size in common use. */
const DIO_ALIGN = 4096;

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
  /** This version's bytes and directory entry are known to be on stable storage (this process flushed them). */
  flushed?: boolean;
}

/** What identifies a version of a file: a cached copy or a read in flight is used only while all four match. */
type FileVersion = Pick<CachedFile, 'ino' | 'size' | 'mtimeNs' | 'ctimeNs'>;

function sameFile(a: FileVersion, b: FileVersion): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

/** A put made ready to publish: its temporary file (none when the file already holds the bytes) and the topmost directory it made. */
interface PreparedPut {
  file: string;
  tmp?: string;
  created?: string;
  /** With no `tmp`: the cached current version that already holds the bytes. */
  holds?: CachedFile;
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

/**
 * Attempts at a write whose directory a concurrent delete keeps removing, from the third on after a pause of as many
 * milliseconds as attempts so far, so that a burst of deletes is over before the next: with 8 pushes and 8
 * deletes of one tag in a loop, five attempts without a pause ran out once on a loaded CI machine (a 500).
 */
const RACE_RETRIES = 10;
const racePause = (attempt: number): Promise<void> => new Promise((r) => setTimeout(r, attempt));

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

/** Per path: the flush running, and the one queued to start after it (shared by everyone who asked meanwhile). */
const flushes = new Map<string, { running: Promise<void>; queued?: Promise<void> }>();

/**
 * Flushes a path like {@link fsyncPath}, sharing flushes between callers: each gets a flush that starts after
 * it asked, and everyone who asked while one was running shares the next. Concurrent puts flush common
 * directories (a repository's `_manifests/tags`, a revision pushed under many tags) once per round instead of
 * once each.
 */
function flushShared(path: string): Promise<void> {
  const f = flushes.get(path);
  if (f?.queued) return f.queued;
  const start = (): Promise<void> => {
    const running = fsyncPath(path);
    flushes.set(path, { running });
    const done = (): void => {
      if (flushes.get(path)?.running === running && !flushes.get(path)?.queued) flushes.delete(path);
    };
    running.then(done, done);
    return running;
  };
  if (!f) return start();
  const queued = f.running.then(start, start);
  f.queued = queued;
  return queued;
}

/** Flushes a directory's entries, or a file's bytes, to stable storage. */
async function fsyncPath(dir: string): Promise<void> {
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
  /** Turned off for good once the file system refuses O_DIRECT (see DIRECT_SLAB; only with fsync). */
  let directIo = true;
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

  const tmpDir = base + TMP_DIR;
  let tmpReady: Promise<unknown> | undefined;

  /**
   * Creates a file's missing parents; each new directory's entry is flushed into its parent. Returns the topmost
   * directory it created, if any.
   */
  async function ensureParent(file: string): Promise<string | undefined> {
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
        if (attempt > 1) await racePause(attempt);
      }
    }
    if (created === undefined || !durable) return created;
    // `created` is the topmost new directory. Its parent and every new directory but the last get an entry; the
    // last one's entries are flushed by the caller after its rename. A directory deleted meanwhile needs none.
    const flush = [dirname(created)];
    for (let d = dirname(parent); d.length >= created.length; d = dirname(d)) flush.push(d);
    await Promise.all(flush.map((d) => flushShared(d).catch(ignoreEnoent)));
    return created;
  }

  /**
   * Renames `from` to `file`, making its parents (unless the caller just made them). When a concurrent delete
   * removes the parent between the two, the parents are made again: the write then simply happened after the
   * delete.
   */
  async function renameInto(from: string, file: string, parentsMade = false): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1 || !parentsMade) await ensureParent(file);
      try {
        await fsp.rename(from, file);
        break;
      } catch (e) {
        if (!isEnoent(e) || attempt >= RACE_RETRIES || !(await exists(from))) throw e;
        if (attempt > 1) await racePause(attempt);
      }
    }
    // Gone again already: a delete that came after this write removed it, and there is nothing to flush.
    if (durable) await flushShared(dirname(file)).catch(ignoreEnoent);
  }

  /** A new temporary file holding `data`, flushed to stable storage when durable. */
  async function writeTmp(data: Uint8Array): Promise<string> {
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
    return tmp;
  }

  /**
   * The small-file cache's copy of `file` when it is the file's current version (a stat, no read) and holds
   * exactly `data`: a manifest pushed again, a tag moved to where it points. Such a put writes nothing.
   */
  async function alreadyHolds(file: string, data: Uint8Array): Promise<CachedFile | undefined> {
    if (data.length > SMALL_FILE) return undefined;
    const st = await statSoon(file).catch(() => undefined);
    const hit = st && !st.isDirectory() ? small.get(file) : undefined;
    return hit && st && sameFile(hit, st) && hit.data.equals(data) ? hit : undefined;
  }

  /**
   * A put's first step, which may run beside other puts' first steps: the bytes in a temporary file and the
   * parents made, side by side (nothing for a file that already holds the bytes).
   */
  async function prepare(file: string, data: Uint8Array): Promise<PreparedPut> {
    const holds = await alreadyHolds(file, data);
    if (holds) return { file, holds };
    const [tmp, parents] = await Promise.allSettled([writeTmp(data), ensureParent(file)]);
    if (tmp.status === 'fulfilled' && parents.status === 'fulfilled') return { file, tmp: tmp.value, created: parents.value };
    await undo([{ file, tmp: tmp.status === 'fulfilled' ? tmp.value : undefined, created: parents.status === 'fulfilled' ? parents.value : undefined }]);
    throw tmp.status === 'rejected' ? tmp.reason : (parents as PromiseRejectedResult).reason;
  }

  /**
   * Takes back what puts prepared and did not publish: their temporary files, and the directories they made
   * while still empty, deepest first (puts of one batch may share new directories, made by either).
   */
  async function undo(puts: readonly PreparedPut[]): Promise<void> {
    const dirs = new Set<string>();
    for (const p of puts) {
      if (p.created === undefined) continue;
      for (let d = dirname(p.file); d.length >= p.created.length; d = dirname(d)) dirs.add(d);
    }
    await Promise.all(puts.map((p) => (p.tmp === undefined ? undefined : fsp.rm(p.tmp, { force: true }))));
    // Not empty (a concurrent put uses it) or gone: it stays, or is already away.
    for (const d of [...dirs].sort((a, b) => b.length - a.length)) await fsp.rmdir(d).catch(() => undefined);
  }

  /**
   * A put's second step: renamed into place and its directory entry flushed. A file that already held the bytes
   * is flushed with its entry instead (both no-ops when an earlier put made them durable, but the file may be
   * another process's put that is still flushing, or distribution's, which never flushes).
   */
  async function publish(p: PreparedPut): Promise<void> {
    if (p.tmp === undefined) {
      if (!durable || p.holds?.flushed) return;
      try {
        await Promise.all([flushShared(p.file), flushShared(dirname(p.file))]);
        // That version stays flushed: the next put of the same bytes over it has nothing to wait for.
        if (p.holds) p.holds.flushed = true;
      } catch (e) {
        // Gone meanwhile: a delete that came after this put removed it.
        ignoreEnoent(e);
      }
      return;
    }
    await renameInto(p.tmp, p.file, true);
  }

  /**
   * Puts files in order, each durable before the next becomes visible; the temporary copies and parents of all
   * are made at once first, so a manifest put by tag (revision link, tag index link, tag link) waits for four
   * rounds of flushes instead of eight. A failure puts none of the files after it (none at all when it comes
   * while preparing), and takes back the temporary files and empty directories made for them.
   */
  async function putAll(files: readonly ContentWrite[]): Promise<void> {
    const prepared = await Promise.allSettled(files.map((f) => prepare(full(f.path), f.data)));
    const ready = prepared.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = prepared.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await undo(ready);
      throw failed.reason;
    }
    for (let i = 0; i < ready.length; i++) {
      try {
        await publish(ready[i]!);
      } catch (e) {
        await undo(ready.slice(i));
        throw e;
      }
    }
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

  /**
   * The FileWriter of either writer: `sync` makes what was written durable, `close` closes the handles after
   * the writes in flight (what was still gathering or filling is dropped, so nothing lands in the file after
   * the client has seen its connection end: a broken request keeps a prefix it may resume from).
   */
  function writerAround(
    file: string,
    o: WriterOptions | undefined,
    initial: number,
    stream: Writable,
    size: () => number,
    close: () => Promise<void>,
    sync: () => Promise<void>,
  ): FileWriter {
    return {
      stream,
      size,
      async commit() {
        try {
          await sync();
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
      close,
      async discard() {
        await close().catch(() => undefined);
        if (o?.append) await fsp.truncate(file, initial);
        else await fsp.rm(file, { force: true });
      },
    };
  }

  /**
   * An fdatasync of `h` started in the background after every FLUSH_EVERY bytes written (one at a time, none
   * unless durable), so that the fsync before the acknowledgement finds little left to write: writeback
   * overlaps with receiving instead of following it. A failure goes to `failed`; `idle()` never rejects.
   */
  function backgroundFlushes(h: FileHandle, failed: (e: unknown) => void): { wrote(n: number): void; idle(): Promise<void> } {
    let unflushed = 0;
    let flushing: Promise<void> | undefined;
    return {
      wrote(n) {
        unflushed += n;
        if (!durable || unflushed < FLUSH_EVERY || flushing) return;
        unflushed = 0;
        flushing = h.datasync().then(
          () => {
            flushing = undefined;
          },
          (e: unknown) => {
            failed(e);
            flushing = undefined;
          },
        );
      },
      idle: () => flushing ?? Promise.resolve(),
    };
  }

  /** A writer through the page cache: gathered chunks in `writev` batches, flushed in the background. */
  async function bufferedWriter(file: string, o: WriterOptions | undefined): Promise<FileWriter> {
    const h = await fsp.open(file, o?.append ? 'a' : 'w');
    const initial = o?.append ? (await h.stat()).size : 0;
    openWriters++;
    let written = 0;
    let flushError: unknown;
    const flushes = backgroundFlushes(h, (e) => (flushError = e));
    const progress = (n: number): void => {
      written += n;
      flushes.wrote(n);
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
      await flushes.idle();
      await h.close();
    };
    return writerAround(file, o, initial, stream, () => initial + written, close, async () => {
      await flushes.idle();
      if (flushError) throw flushError;
      // fdatasync: the data and the size (what reading it back needs), without the timestamps.
      if (durable) await h.datasync();
    });
  }

  /**
   * A writer with O_DIRECT (see DIRECT_SLAB): chunks are copied into page-aligned slabs, full slabs are written
   * straight to the device (those filled while a write was in flight together, in the next one), and the last
   * partial block goes through the page cache.
   * An append that starts inside a block reads that block's head back into the first slab and rewrites it.
   * Undefined when no slabs are free (many uploads at once) or the file system refuses O_DIRECT (then
   * `unsupported` is called and the driver stops trying).
   */
  async function directWriter(file: string, o: WriterOptions | undefined, unsupported: () => void): Promise<FileWriter | undefined> {
    if (directSlabs.available() < DIRECT_MIN_SLABS) return undefined;
    const own: Buffer[] = [];
    // From the pool, not from openWriters: writers opened at the same moment count each other only later.
    const want = directSlabs.available() >= 2 * DIRECT_SLABS ? DIRECT_SLABS : DIRECT_MIN_SLABS;
    for (let b = directSlabs.take(); b; b = own.length < want ? directSlabs.take() : undefined) own.push(b);
    // Emptied as the slabs go back: a closed writer's closures can outlive it (an upload session remembered
    // for a while), and a slab still referenced keeps the pool's whole memory from being collected once idle.
    const giveBack = (): void => {
      for (const b of own.splice(0)) directSlabs.give(b);
    };
    let h: FileHandle | undefined;
    let d: FileHandle | undefined;
    let initial = 0;
    let slabPos = 0;
    let fill = 0;
    try {
      // Read-write without O_APPEND: every write is positional (pwrite ignores the position under O_APPEND).
      h = await fsp.open(file, o?.append ? fsc.O_RDWR | fsc.O_CREAT : 'w+');
      try {
        d = await fsp.open(file, fsc.O_WRONLY | fsc.O_DIRECT);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
        unsupported();
        await h.close();
        giveBack();
        return undefined;
      }
      if (o?.append) initial = (await h.stat()).size;
      slabPos = initial - (initial % DIO_ALIGN);
      fill = initial - slabPos;
      if (fill > 0 && (await h.read(own[0]!, 0, fill, slabPos)).bytesRead !== fill) throw new Error(`${file} changed while opened`);
    } catch (e) {
      await h?.close().catch(() => undefined);
      await d?.close().catch(() => undefined);
      giveBack();
      throw e;
    }
    const fh = h;
    const dh = d;
    openWriters++;
    const free = own.slice(1);
    let cur: Buffer | undefined = own[0];
    /** The filling slab holds bytes of this writer's (not only the head of a block read back). */
    let fresh = false;
    /** End of the bytes known to be in the file. */
    let extent = initial;
    let direct = true;
    let failure: unknown;
    let closed = false;
    const pending = new Set<Promise<void>>();
    const waiting: (() => void)[] = [];
    /** Chunks copied into slabs and not yet handed back (onWritten). */
    let copied: Buffer[] = [];
    let copiedBytes = 0;

    /** Filled slabs waiting for the write before them, in file order (contiguous). */
    const queued: { slab: Buffer; len: number }[] = [];
    /** File position of the first queued slab. */
    let queuedAt = slabPos;
    /**
     * Writes a run of slabs at `at`: its whole blocks straight to the device in one call, the rest (the partial
     * last block, a short direct write, no O_DIRECT) through the page cache.
     */
    const writeRun = async (run: { slab: Buffer; len: number }[], at: number): Promise<void> => {
      let total = 0;
      for (const r of run) total += r.len;
      const blocks: Buffer[] = [];
      for (const r of run) {
        const whole = r.len - (r.len % DIO_ALIGN);
        if (whole > 0) blocks.push(whole === r.slab.length ? r.slab : r.slab.subarray(0, whole));
        if (whole !== r.len) break;
      }
      let done = 0;
      if (direct && blocks.length > 0) {
        try {
          done = blocks.length === 1 ? (await dh.write(blocks[0]!, 0, blocks[0]!.length, at)).bytesWritten : (await dh.writev(blocks, at)).bytesWritten;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
          // The device wants a larger alignment than DIO_ALIGN: this writer and the driver go without.
          direct = false;
          unsupported();
        }
      }
      let pos = 0;
      for (const r of run) {
        for (let off = Math.max(0, done - pos); off < r.len; ) {
          const n = (await fh.write(r.slab, off, r.len - off, at + pos + off)).bytesWritten;
          if (n === 0) throw Object.assign(new Error('the file system accepted no bytes'), { code: 'EIO' });
          off += n;
        }
        pos += r.len;
      }
      extent = Math.max(extent, at + total);
      // As in the buffered writer: the device's own cache (and the host's, on a VM) takes as long to flush as
      // it took to fill, and a single flush at the end stalled the acknowledgement of a 1 GiB push for 0.6 s.
      flushes.wrote(total);
    };
    const flushes = backgroundFlushes(fh, (e) => (failure ??= e));
    /**
     * Writes what is queued, one write at a time: an upload only ever appends, and ext4 serialises direct
     * writes that extend a file anyway (each holds the inode lock until the device has the bytes, and costs a
     * journal update of the size), so the slabs that filled meanwhile go down together in one `pwritev`.
     */
    const pump = (): void => {
      if (writing || queued.length === 0) return;
      if (failure !== undefined) {
        for (const q of queued.splice(0)) free.push(q.slab);
        return;
      }
      // Everything queued, up to a partial block (only ever the last slab of all).
      let n = 0;
      while (n < queued.length && queued[n++]!.len % DIO_ALIGN === 0);
      const run = queued.splice(0, n);
      const at = queuedAt;
      for (const r of run) queuedAt += r.len;
      const p: Promise<void> = writeRun(run, at)
        .catch((e: unknown) => {
          failure ??= e;
        })
        .finally(() => {
          writing = undefined;
          pending.delete(p);
          for (const r of run) free.push(r.slab);
          pump();
          for (const w of waiting.splice(0)) w();
        });
      writing = p;
      pending.add(p);
    };
    let writing: Promise<void> | undefined;
    /** Queues the filling slab behind the ones before it. */
    const submit = (): void => {
      queued.push({ slab: cur!, len: fill });
      slabPos += fill;
      cur = undefined;
      fill = 0;
      fresh = false;
      pump();
    };
    const nextSlab = async (): Promise<Buffer> => {
      while (free.length === 0 && !closed && failure === undefined) await new Promise<void>((r) => waiting.push(r));
      if (closed) throw Object.assign(new Error('writer closed'), { code: 'ERR_STREAM_DESTROYED' });
      if (failure !== undefined) throw failure;
      return free.pop()!;
    };
    const handBack = async (): Promise<void> => {
      if (copied.length === 0) return;
      const chunks = copied;
      copied = [];
      copiedBytes = 0;
      await o?.onWritten?.(chunks);
    };
    const put = async (chunk: Buffer): Promise<void> => {
      if (failure !== undefined) throw failure;
      for (let off = 0; off < chunk.length; ) {
        cur ??= await nextSlab();
        const n = chunk.copy(cur, fill, off);
        fill += n;
        off += n;
        fresh = true;
        if (fill === cur.length) submit();
      }
      // Copied, so the writer has no more use for it: hashed and freed by the caller, a batch at a time.
      copied.push(chunk);
      copiedBytes += chunk.length;
      if (copiedBytes >= WRITE_BATCH) await handBack();
    };
    const settled = async (): Promise<void> => {
      while (pending.size > 0) await Promise.all(pending);
    };
    const stream = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _enc, cb) {
        put(chunk).then(() => cb(), cb);
      },
      final(cb) {
        (async () => {
          await handBack();
          if (cur && fresh) submit();
          await settled();
          if (failure !== undefined) throw failure;
        })().then(() => cb(), cb);
      },
      destroy(err, cb) {
        // What was copied into the filling slab is dropped; slabs being written finish first.
        cur = undefined;
        fill = 0;
        settled().then(() => cb(err));
      },
    });
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      openWriters--;
      for (const w of waiting.splice(0)) w();
      if (!stream.destroyed && !stream.writableFinished) stream.destroy();
      await settled();
      await flushes.idle();
      // A write that failed may have left a hole before later ones: keep only what this writer found.
      if (failure !== undefined) await fh.truncate(initial).catch(() => undefined);
      free.length = 0;
      cur = undefined;
      giveBack();
      await Promise.all([fh.close(), dh.close()]);
    };
    return writerAround(file, o, initial, stream, () => extent, close, async () => {
      await settled();
      await flushes.idle();
      if (failure !== undefined) throw failure;
      // The slabs went to the device; fdatasync makes the file's size and blocks durable and flushes the
      // device's cache (and the partial last block, written through the page cache).
      await fh.datasync();
    });
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
      // One file: straight through. Through the batch path, 2,000 upload sessions opened 32 at a time grew the
      // process by 31–35 MiB instead of 18–25 (slow-clients reliability test), for nothing to overlap.
      const file = full(path);
      const holds = await alreadyHolds(file, data);
      if (holds) return publish({ file, holds });
      const tmp = await writeTmp(data);
      try {
        await renameInto(tmp, file);
      } catch (e) {
        await fsp.rm(tmp, { force: true });
        throw e;
      }
    },

    putContents: putAll,

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
      // Direct unless announced smaller than a slab (DIRECT_SLAB); only when flushing, as it is for durability's sake.
      if (durable && directIo && !((o?.expectedBytes ?? DIRECT_SLAB) < DIRECT_SLAB)) {
        const w = await directWriter(file, o, () => (directIo = false));
        if (w) return w;
      }
      return bufferedWriter(file, o);
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
      // The path is gone from the tree: the delete is done. A writer whose rename resolved the directory's old
      // path just before it moved can still land a file in the grave (Linux looks a path up before it locks the
      // parent), so emptying it may meet ENOTEMPTY: retried, and what still fails is left to sweepTmp.
      await fsp.rm(grave, { recursive: true, force: true, maxRetries: 5, retryDelay: 5 }).catch(() => undefined);
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
