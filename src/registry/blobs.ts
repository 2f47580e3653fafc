/**
 * Blobs and upload sessions (after distribution's blobwriter.go): bytes stream through a hash tap into
 * `_uploads/<id>/data`, are fsynced before each acknowledgement, and become a blob only by a rename after
 * their size and digest were verified. Live hashes stay in this process; anything else is re-hashed.
 */
import { randomUUID } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { OciError } from '../spec/errors.ts';
import { type Digest, type ParsedDigest, newHash } from '../spec/digest.ts';
import type { RepoName } from '../spec/names.ts';
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import * as P from './paths.ts';
import { ByteLru } from './byte-lru.ts';
import { exists, readLink, remove } from './context.ts';
import { BLOB_MEDIA_TYPE, type CacheGuard } from './descriptor-cache.ts';
import { newUploadHash, THREAD_MAX_UPLOADS, type UploadHash } from './upload-hash.ts';
import { releaseChunk } from '../storage/release.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface UploadStatus {
  id: string;
  size: number;
  startedAt: string;
}

export interface AppendOptions {
  /** First byte offset the client claims (`Content-Range` start); must equal the current size. */
  start?: number;
  /** Bytes the client announced; a different count is `SIZE_INVALID`. */
  length?: number;
  signal?: AbortSignal;
  /** Nothing but this upload reads the body's chunks (a request body): their memory is freed once written. */
  bodyGivenUp?: boolean;
}

interface LiveHash {
  hash: UploadHash;
  offset: number;
}


/** Blobs at most this large are served from memory once read (content by digest is immutable). */
export const SMALL_BLOB = 64 * 1024;
const SMALL_BLOB_CACHE_BYTES = 16 * 1024 * 1024;
/** Uploads whose running hash is kept (more than any server has in flight at once). */
const LIVE_HASHES = 4096;

/**
 * Pipes a request body into a writer's stream until the stream has finished. Rejects with the first failure,
 * and `failure.byClient` tells which side it came from: the client's (the body broke, the request was aborted)
 * or storage's. Unlike `stream.pipeline`, a failure of the writer leaves the body alone (unpiped, paused), so the
 * error answer can drain it and keep the connection.
 */
function pump(body: Readable, dest: Writable, signal: AbortSignal | undefined, failure: { byClient: boolean }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (e?: Error, byClient = false): void => {
      if (settled) return;
      settled = true;
      body.off('error', onBodyError);
      body.off('close', onBodyClose);
      dest.off('finish', onFinish);
      dest.off('close', onDestClose);
      signal?.removeEventListener('abort', onAbort);
      if (!e) return resolve();
      failure.byClient = byClient;
      body.unpipe(dest);
      reject(e);
    };
    const onBodyError = (e: Error): void => settle(e, true);
    const onBodyClose = (): void => {
      if (!body.readableEnded) settle(Object.assign(new Error('request body closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }), true);
    };
    // The writer's errors after the first failure (a late write callback) have nowhere to go: kept listening.
    const onDestError = (e: Error): void => settle(e);
    const onFinish = (): void => settle();
    const onDestClose = (): void => {
      if (!dest.writableFinished) settle(new Error('storage writer closed before the end of the data'));
    };
    const onAbort = (): void => settle(Object.assign(new Error('request aborted'), { name: 'AbortError', code: 'ABORT_ERR' }), true);
    body.on('error', onBodyError);
    body.on('close', onBodyClose);
    dest.on('error', onDestError);
    dest.on('finish', onFinish);
    dest.on('close', onDestClose);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    body.pipe(dest);
  });
}

/** How long a request waits for another request of this process writing to the same upload. */
const LOCK_WAIT_MS = 10_000;

/**
 * Upload sessions this process opened in the last OPENED_WINDOW_MS and has not seen finished count as uploads
 * about to be written when a hash is chosen (upload-hash.ts hashes on its thread only while few uploads are
 * written). A burst of pushes opens its sessions before the first body arrives, and the first bodies would
 * otherwise find the process idle and start the thread, whose isolate (~10 MiB) then served only them: 32
 * concurrent `curl -T` pushes of 32 MiB against 2 processes peaked at 193–196 MiB summed before this rule,
 * 179–180 with it, at the same rate or better (249–317 against 301–314 MB/s).
 */
const OPENED_WINDOW_MS = 5_000;

/** Upload ids are UUIDs: anything else names no upload (and never reaches a storage path). */
function checkUploadId(id: string): void {
  if (!UUID.test(id)) throw new OciError('BLOB_UPLOAD_UNKNOWN', { uuid: id.slice(0, 100) });
}

/** Whether `p` settles within `ms`. */
function settledWithin(p: Promise<void>, ms: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    t.unref();
    p.then(() => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

export class BlobStore {
  private readonly driver: StorageDriver;
  /**
   * Running hashes of uploads in progress, bounded: an abandoned session must not hold memory until it is
   * purged. An upload whose hash was evicted is re-hashed from storage when it completes.
   */
  private readonly live = new ByteLru<LiveHash>(LIVE_HASHES, () => 1, LIVE_HASHES, (l) => l.hash.drop());
  /** Uploads a request of this process is writing to, settling when it is done (its bytes are in place). */
  private readonly busy = new Map<string, Promise<void>>();
  /** Sessions opened here recently and not finished here: id → when (see OPENED_WINDOW_MS). */
  private readonly opened = new Map<string, number>();
  private readonly smallBlobs = new ByteLru<Buffer>(SMALL_BLOB_CACHE_BYTES, (b) => b.length);
  /** The blob-descriptor cache, if configured. Its repository memberships mean "linked as a layer/config". */
  private readonly cache: CacheGuard | undefined;

  constructor(driver: StorageDriver, cache?: CacheGuard) {
    this.driver = driver;
    this.cache = cache;
  }

  /**
   * Size of a blob linked into `name` (as a layer/config or as a manifest), else `BLOB_UNKNOWN`. A cache hit
   * costs no storage read; a miss reads storage and records a layer link in the cache.
   */
  async stat(name: RepoName, digest: Digest): Promise<number> {
    const hit = await this.cache?.statInRepo(name, digest);
    if (hit) return hit.size;
    const [layer, revision] = await Promise.all([
      readLink(this.driver, P.layerLink(name, digest)),
      readLink(this.driver, P.revisionLink(name, digest)),
    ]);
    if (layer !== digest && revision !== digest) throw new OciError('BLOB_UNKNOWN', { digest });
    const size = this.smallBlobs.get(digest)?.length ?? (await this.dataSize(digest));
    if (size === undefined) throw new OciError('BLOB_UNKNOWN', { digest });
    if (layer === digest) await this.remember(name, digest, size);
    return size;
  }

  /** Size of a blob's data in storage, or undefined when absent. */
  private async dataSize(digest: Digest): Promise<number | undefined> {
    try {
      return (await this.driver.stat(P.blobData(digest))).size;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * Records in the cache that `digest` is linked into `name`, then re-reads the link: a delete that removed it
   * meanwhile (here or in another instance) may have cleared the cache before our write, so the entry is
   * cleared again. Together with deletes clearing after unlinking, no entry outlives its link.
   * A failed write may still have reached Redis (a timeout), so it is cleared too.
   */
  private async remember(name: RepoName, digest: Digest, size: number): Promise<void> {
    if (!this.cache) return;
    const set = await this.cache.setInRepo(name, digest, { digest, size, mediaType: BLOB_MEDIA_TYPE });
    if (!set || (await readLink(this.driver, P.layerLink(name, digest))) !== digest) await this.cache.forget(name, digest);
  }

  /** Whether the blob is linked as a layer/config into `name` and its data exists. */
  async isLinked(name: RepoName, digest: Digest): Promise<boolean> {
    if (await this.cache?.statInRepo(name, digest)) return true;
    const [link, size] = await Promise.all([readLink(this.driver, P.layerLink(name, digest)), this.dataSize(digest)]);
    if (link !== digest || size === undefined) return false;
    await this.remember(name, digest, size);
    return true;
  }

  /** The whole content of a blob of at most {@link SMALL_BLOB} bytes, from memory when possible. */
  async readSmall(digest: Digest): Promise<Buffer> {
    const hit = this.smallBlobs.get(digest);
    if (hit) return hit;
    let data: Buffer;
    try {
      data = await this.driver.getContent(P.blobData(digest), { maxSize: SMALL_BLOB });
    } catch (e) {
      if (isNotFound(e)) throw new OciError('BLOB_UNKNOWN', { digest });
      throw e;
    }
    this.smallBlobs.set(digest, data);
    return data;
  }

  /** Streams `[start, end]` (inclusive) of a blob's bytes. */
  async open(digest: Digest, start: number, end: number, signal?: AbortSignal): Promise<Readable> {
    try {
      return await this.driver.reader(P.blobData(digest), start, { end, signal, highWaterMark: 1024 * 1024 });
    } catch (e) {
      if (isNotFound(e)) throw new OciError('BLOB_UNKNOWN', { digest });
      throw e;
    }
  }

  /** Writes `[start, end]` (inclusive) of a blob into `dest` (not ending it), with the driver's fast path if any. */
  async send(digest: Digest, start: number, end: number, dest: Writable, onOpen: () => void, signal?: AbortSignal): Promise<void> {
    try {
      if (this.driver.sendTo) return await this.driver.sendTo(P.blobData(digest), dest, { start, end, onOpen });
      const r = await this.driver.reader(P.blobData(digest), start, { end, signal, highWaterMark: 1024 * 1024 });
      onOpen();
      await pipeline(r, dest, { end: false });
    } catch (e) {
      if (isNotFound(e)) throw new OciError('BLOB_UNKNOWN', { digest });
      throw e;
    }
  }

  async redirectUrl(digest: Digest, method: 'GET' | 'HEAD'): Promise<string | undefined> {
    return this.driver.redirectUrl(P.blobData(digest), method);
  }

  /**
   * Unlinks a blob from a repository (the bytes stay until garbage collection, as in distribution). The cache
   * entry is cleared before the link is removed (if that fails, `UNAVAILABLE` and nothing changed) and again
   * after (a concurrent miss may have re-recorded it in between).
   */
  async delete(name: RepoName, digest: Digest): Promise<void> {
    if ((await readLink(this.driver, P.layerLink(name, digest))) !== digest) {
      // An entry left by an earlier delete whose last clear failed goes now.
      await this.cache?.forget(name, digest);
      throw new OciError('BLOB_UNKNOWN', { digest });
    }
    await this.cache?.invalidate(name, digest);
    await remove(this.driver, P.layerLink(name, digest).slice(0, -'/link'.length));
    await this.cache?.forget(name, digest);
  }

  /**
   * Links an existing blob into `name`. With `from`, the blob must be linked there; without it, any blob in
   * the registry may be mounted. Returns the blob's size, or undefined when it cannot be mounted.
   */
  async mount(name: RepoName, digest: Digest, from: RepoName | undefined): Promise<number | undefined> {
    if (from !== undefined && !(await this.isLinked(from, digest))) return undefined;
    const size = (await this.cache?.stat(digest))?.size ?? (await this.dataSize(digest));
    if (size === undefined) return undefined;
    await this.driver.putContent(P.layerLink(name, digest), Buffer.from(digest));
    await this.remember(name, digest, size);
    return size;
  }

  /** Starts an upload session: `_uploads/<uuid>/startedat` and an empty `data`. */
  async startUpload(name: RepoName): Promise<UploadStatus> {
    const id = randomUUID();
    const startedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    // Written side by side: their flushes share journal commits instead of following one another. A crash
    // between them leaves a directory without one of the two, which is no session (its 202 was never sent)
    // and which purging removes by the directory's age.
    await Promise.all([this.driver.putContent(P.uploadStartedAt(name, id), Buffer.from(startedAt)), this.driver.putContent(P.uploadData(name, id), Buffer.alloc(0))]);
    // The running hash starts with the first append (a session that never sends a byte costs nothing here).
    this.forgetOldOpenings();
    this.opened.set(id, Date.now());
    return { id, size: 0, startedAt };
  }

  /** The upload's status, or `BLOB_UPLOAD_UNKNOWN`. */
  async uploadStatus(name: RepoName, id: string): Promise<UploadStatus> {
    checkUploadId(id);
    // A request of this process still writing to the upload: its size is known once it is done.
    const held = this.busy.get(id);
    if (held) await settledWithin(held, LOCK_WAIT_MS);
    return this.readStatus(name, id);
  }

  /** The upload's state in storage, without waiting for a writer (the caller holds the lock, or needs none). */
  private async readStatus(name: RepoName, id: string): Promise<UploadStatus> {
    try {
      const [st, started] = await Promise.all([
        this.driver.stat(P.uploadData(name, id)),
        this.driver.getContent(P.uploadStartedAt(name, id), { maxSize: 256 }),
      ]);
      return { id, size: st.size, startedAt: started.toString('utf8') };
    } catch (e) {
      if (isNotFound(e)) throw new OciError('BLOB_UPLOAD_UNKNOWN', { uuid: id });
      throw e;
    }
  }

  /**
   * Takes the upload for writing. A request that finds it taken waits (up to LOCK_WAIT_MS) for the one before:
   * typically a request whose client vanished and whose bytes are still being written, which the client's
   * resumed request must see.
   */
  private async lock(id: string): Promise<() => void> {
    checkUploadId(id);
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let held = this.busy.get(id); held; held = this.busy.get(id)) {
      const left = deadline - Date.now();
      if (left <= 0 || !(await settledWithin(held, left))) {
        throw new OciError('BLOB_UPLOAD_INVALID', { uuid: id, reason: 'another request is writing to this upload' });
      }
    }
    let release!: () => void;
    this.busy.set(id, new Promise<void>((r) => (release = r)));
    return () => {
      this.busy.delete(id);
      release();
    };
  }

  /** Uploads being written here (the caller's, locked, among them) or opened here recently and not finished. */
  private uploadsUnderway(): number {
    this.forgetOldOpenings();
    let n = this.busy.size;
    // Counted only as far as the choice of hash looks, not through every session of a burst.
    for (const other of this.opened.keys()) if (!this.busy.has(other) && ++n > THREAD_MAX_UPLOADS) break;
    return n;
  }

  /** Drops the openings older than OPENED_WINDOW_MS (the map is in opening order, so from its front). */
  private forgetOldOpenings(): void {
    const since = Date.now() - OPENED_WINDOW_MS;
    for (const [id, at] of this.opened) {
      if (at >= since) break;
      this.opened.delete(id);
    }
  }

  /** Appends a chunk (in order only); returns the new status. The data is fsynced before returning. */
  async append(name: RepoName, id: string, body: Readable, opts: AppendOptions = {}): Promise<UploadStatus> {
    const unlock = await this.lock(id);
    try {
      const status = await this.readStatus(name, id);
      return { ...status, size: await this.appendLocked(name, status, body, opts) };
    } finally {
      unlock();
    }
  }

  private async appendLocked(name: RepoName, status: UploadStatus, body: Readable, opts: AppendOptions): Promise<number> {
    const { id, size } = status;
    if (opts.start !== undefined && opts.start !== size) {
      body.resume();
      throw new OciError('RANGE_INVALID', { uuid: id, expectedStart: size, start: opts.start }, { Range: `0-${Math.max(size - 1, 0)}`, 'Docker-Upload-UUID': id });
    }
    let live = this.live.get(id);
    if (!live || live.offset !== size) {
      live = size === 0 ? { hash: newUploadHash(opts.length, this.uploadsUnderway()), offset: 0 } : undefined;
      if (live) this.live.set(id, live);
      else this.live.delete(id);
    }
    // The hash takes each batch of chunks once it is stored, in order (see upload-hash.ts); a body given up is
    // freed (or moved to the hashing thread) as soon as it is written, not at V8's next scavenge.
    const hash = live?.hash;
    const givenUp = opts.bodyGivenUp === true;
    const onWritten = (chunks: Buffer[]): void | Promise<void> => {
      if (hash) return hash.update(chunks, givenUp);
      if (givenUp) for (const c of chunks) releaseChunk(c);
    };
    const writer = await this.driver.writer(P.uploadData(name, id), { append: true, signal: opts.signal, onWritten, expectedBytes: opts.length });
    const failure = { byClient: false };
    try {
      await pump(body, writer.stream, opts.signal, failure);
    } catch (e) {
      this.live.delete(id);
      if (failure.byClient) {
        // The client went away: the bytes that reached the file are a valid prefix it may resume from (the
        // upload status reports them).
        await writer.close().catch(() => undefined);
      } else {
        // Storage failed: drop what this request wrote, so the upload holds exactly the acknowledged bytes
        // (and a full disk gets its space back).
        await writer.discard().catch(() => undefined);
      }
      throw e;
    }
    try {
      await writer.commit();
    } catch (e) {
      // Not durable, so not acknowledged: the upload goes back to its acknowledged size.
      this.live.delete(id);
      await writer.discard().catch(() => undefined);
      throw e;
    }
    const newSize = writer.size();
    if (live) live.offset = newSize;
    if (opts.length !== undefined && newSize - size !== opts.length) {
      throw new OciError('SIZE_INVALID', { expected: opts.length, received: newSize - size });
    }
    return newSize;
  }

  /**
   * Completes an upload: appends an optional final chunk, verifies the digest (re-hashing from storage when
   * the live hash is not here), moves the data into place and links it into the repository.
   */
  async complete(name: RepoName, id: string, expected: ParsedDigest, finalChunk?: Readable, opts: AppendOptions = {}): Promise<number> {
    const unlock = await this.lock(id);
    try {
      let status = await this.readStatus(name, id);
      if (finalChunk) status = { ...status, size: await this.appendLocked(name, status, finalChunk, opts) };
      const size = status.size;
      const live = this.live.get(id);
      // A lost running hash (its thread died) is no failure: the data is hashed again from storage.
      let actual = live && live.offset === size && expected.algorithm === 'sha256' ? await live.hash.digest().catch(() => undefined) : undefined;
      if (actual === undefined) {
        const h = newHash(expected.algorithm);
        const r = await this.driver.reader(P.uploadData(name, id), 0, { signal: opts.signal });
        for await (const chunk of r) h.update(chunk as Buffer);
        actual = h.digest('hex');
      }
      this.live.delete(id);
      if (actual !== expected.hex) {
        await remove(this.driver, P.uploadDir(name, id));
        await this.pruneEmpty(name);
        throw new OciError('DIGEST_INVALID', { expected: expected.digest, actual: `${expected.algorithm}:${actual}` });
      }
      const target = P.blobData(expected.digest);
      // The data moves into place while the repository's link is written: their flushes overlap instead of
      // following one another. Every lookup through a link also needs the data, so a link that lands first
      // (seen for an instant, or left by a crash or a failed move) names a blob that is simply not there yet,
      // as before the push; the 201 comes only once both are durable.
      await Promise.all([
        (async () => {
          if (await exists(this.driver, target)) await remove(this.driver, P.uploadData(name, id));
          else await this.driver.move(P.uploadData(name, id), target);
          await remove(this.driver, P.uploadDir(name, id));
        })(),
        this.driver.putContent(P.layerLink(name, expected.digest), Buffer.from(expected.digest)),
      ]);
      await this.remember(name, expected.digest, size);
      return size;
    } finally {
      this.opened.delete(id);
      unlock();
    }
  }

  /** Cancels an upload and removes its data. */
  async cancel(name: RepoName, id: string): Promise<void> {
    // Taken like a write: a request waiting to write finds the upload gone instead of recreating its file.
    const unlock = await this.lock(id);
    try {
      await this.readStatus(name, id);
      this.live.delete(id);
      await remove(this.driver, P.uploadDir(name, id));
    } finally {
      this.opened.delete(id);
      unlock();
    }
    await this.pruneEmpty(name);
  }

  /**
   * After an upload was cancelled or failed: removes `_uploads` and then the repository's directories while
   * they are empty, so a failed first push to a new name leaves nothing (the name stays unknown). A concurrent
   * upload to the same name is safe: an empty-only removal never takes an entry, and writes remake parents.
   */
  private async pruneEmpty(name: RepoName): Promise<void> {
    if (!this.driver.removeEmptyDir) return;
    // Only for a repository that has nothing else: an existing one keeps its `_uploads`, as distribution's do.
    const entries = await this.driver.list(P.repoDir(name)).catch(() => undefined);
    if (!entries || entries.length !== 1 || entries[0] !== '_uploads') return;
    for (let dir = P.uploadsDir(name); dir.length > P.REPOSITORIES.length; dir = dir.slice(0, dir.lastIndexOf('/'))) {
      if (!(await this.driver.removeEmptyDir(dir).catch(() => false))) return;
    }
  }
}
