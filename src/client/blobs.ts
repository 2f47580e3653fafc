/**
 * Blob transfer: HEAD, ranged and digest-verified streaming GET that resumes after a broken connection,
 * push (HEAD to skip, cross-repository mount, monolithic PUT for small blobs, chunked PATCH for large ones,
 * resumed from the registry's `Range` after a failure), copy between repositories or registries, cancel.
 */
import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import { tryParseDigest, type Digest, type DigestAlgorithm } from '../spec/digest.ts';
import { parseRepoName } from '../spec/names.ts';
import type { RegistryClient } from './client.ts';
import { DigestMismatchError, RegistryError, SizeMismatchError } from './errors.ts';
import { backoffDelay, isRetryableNetworkError, isRetryableStatus, sleep } from './retry.ts';
import { discard, type HttpResponse } from './transport.ts';

/** What a push reads: bytes, a one-shot stream (not resumable), or a factory opening the content at an offset. */
export type BlobSource = Buffer | Uint8Array | Readable | ((offset: number) => Readable | Promise<Readable>);

export interface BlobInfo {
  digest: Digest;
  size: number;
}

export interface GetBlobOptions {
  /** Bytes `start` to `end` inclusive (`end` omitted: to the end). Ranged reads cannot be digest-verified. */
  range?: { start: number; end?: number };
  /** Expected size of the whole blob (checked when known). */
  size?: number;
  /**
   * Hash a full read and fail on a mismatch (default true). Turn off only when whatever consumes the bytes
   * verifies them itself (the copy engine's destinations do), so they are not hashed twice.
   */
  verify?: boolean;
  signal?: AbortSignal;
}

export interface BlobDownload {
  /**
   * The bytes, with backpressure. A full read is hashed as it streams and the stream fails with
   * {@link DigestMismatchError} at the end when the bytes do not match. A broken connection is resumed with a
   * `Range` request (up to the retry attempts).
   */
  stream: Readable;
  /** How many bytes the stream yields. */
  length: number;
  /** Size of the whole blob when the registry said (`Content-Range` total or `Content-Length` of a full read). */
  totalSize?: number;
}

export interface PushBlobOptions {
  /** The digest, if known (required to skip or mount; computed while streaming otherwise). */
  digest?: string;
  /** The size, if known (a stream of unknown size is sent in one streaming PATCH). */
  size?: number;
  /** A repository of the same registry that may hold the blob: a mount is tried before uploading. */
  from?: string;
  /** Do not HEAD first (the caller knows the blob is missing). */
  skipExistsCheck?: boolean;
  chunkSize?: number;
  monolithicThreshold?: number;
  signal?: AbortSignal;
  /** Called with the number of bytes the registry has acknowledged. */
  onProgress?: (acknowledged: number) => void;
  /**
   * The upload location of an earlier push of this blob that did not finish (a process that was killed): when
   * the registry still has that session, the push continues from the offset it reports. Needs a re-openable
   * source, the digest and the size.
   */
  session?: string;
  /** Called with the upload's location when the session opens and whenever it moves, so a caller can persist it. */
  onSession?: (location: string) => void;
}

export interface PushBlobResult extends BlobInfo {
  /** `exists`: already there (nothing sent); `mounted`: linked from `from`; `uploaded`: bytes were sent. */
  outcome: 'exists' | 'mounted' | 'uploaded';
  /** How many times the upload continued after a failure. */
  resumed: number;
}

/** Reads exact-sized pieces from a stream, one request body after another. */
class ChunkReader {
  private readonly it: AsyncIterator<Buffer>;
  private leftover: Buffer | undefined;
  private ended = false;
  constructor(private readonly stream: Readable) {
    this.it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }
  private async next(max: number): Promise<Buffer | undefined> {
    let b = this.leftover;
    this.leftover = undefined;
    if (!b) {
      if (this.ended) return undefined;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return undefined;
      }
      b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array);
    }
    if (b.length > max) {
      this.leftover = b.subarray(max);
      return b.subarray(0, max);
    }
    return b;
  }
  /** `n` bytes (Infinity: the rest) as a stream; fails if the source ends early when `n` is finite. */
  take(n: number, onBytes: (b: Buffer) => void): Readable {
    const next = (max: number): Promise<Buffer | undefined> => this.next(max);
    return Readable.from(
      (async function* () {
        let left = n;
        while (left > 0) {
          const b = await next(left);
          if (!b) {
            if (Number.isFinite(n)) throw new SizeMismatchError(n, n - left, 'blob source');
            return;
          }
          left -= b.length;
          onBytes(b);
          yield b;
        }
      })(),
      { objectMode: false },
    );
  }
  async skip(n: number, onBytes: (b: Buffer) => void): Promise<void> {
    let left = n;
    while (left > 0) {
      const b = await this.next(left);
      if (!b) throw new SizeMismatchError(n, n - left, 'blob source');
      left -= b.length;
      onBytes(b);
    }
  }
  destroy(): void {
    this.stream.destroy();
  }
}

function contentRangeTotal(v: string | undefined): { start: number; end: number; total?: number } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(v ?? '');
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), ...(m[3] !== '*' ? { total: Number(m[3]) } : {}) };
}

/** The end of an upload's `Range: 0-<end>` header as the next offset. */
function uploadOffset(res: HttpResponse): number | undefined {
  const m = /^(?:bytes=)?0-(\d+)$/.exec(res.header('range') ?? '');
  return m ? Number(m[1]) + 1 : undefined;
}

export interface BlobOps {
  /** The blob's size, or undefined when the repository does not have it. */
  headBlob(repo: string, digest: string, signal?: AbortSignal): Promise<BlobInfo | undefined>;
  /** Opens a blob for streaming (see {@link BlobDownload}); a missing blob is a `RegistryError` (404). */
  getBlob(repo: string, digest: string, o?: GetBlobOptions): Promise<BlobDownload>;
  /** Uploads a blob unless present (see {@link PushBlobOptions}); resumable when the source is a factory or bytes. */
  pushBlob(repo: string, source: BlobSource, o?: PushBlobOptions): Promise<PushBlobResult>;
  /**
   * Copies a blob from `src` (another repository, maybe of another registry) to `repo`: HEAD to skip, mount
   * when both are on this registry, else stream from `src` into the upload (resumed with ranged reads).
   */
  copyBlob(src: { client: RegistryClient; repo: string }, repo: string, blob: BlobInfo, o?: { signal?: AbortSignal; onProgress?: (n: number) => void }): Promise<PushBlobResult>;
  deleteBlob(repo: string, digest: string, signal?: AbortSignal): Promise<void>;
  /**
   * Cross-repository mount only: true when `repo` now has the blob, false when the registry declined (the
   * upload session it opened instead is cancelled).
   */
  mountBlob(repo: string, digest: string, from: string, signal?: AbortSignal): Promise<boolean>;
  /** Cancels an upload session by its location (DELETE); an upload already gone is not an error. */
  cancelUpload(location: string, signal?: AbortSignal): Promise<void>;
}

export function blobOps(c: RegistryClient): BlobOps {
  const sig = (s: AbortSignal | undefined): { signal?: AbortSignal } => (s ? { signal: s } : {});

  async function headBlob(repo: string, digest: string, signal?: AbortSignal): Promise<BlobInfo | undefined> {
    parseRepoName(repo);
    const d = tryParseDigest(digest);
    if (!d) throw new TypeError(`invalid digest ${JSON.stringify(digest.slice(0, 200))}`);
    const res = await c.send({ method: 'HEAD', url: `/v2/${repo}/blobs/${digest}`, scopes: [`repository:${repo}:pull`], ok: [200, 404], ...sig(signal) });
    await discard(res);
    if (res.status === 404) return undefined;
    return { digest: d.digest, size: Number(res.header('content-length') ?? 0) };
  }

  async function getBlob(repo: string, digest: string, o: GetBlobOptions = {}): Promise<BlobDownload> {
    parseRepoName(repo);
    const d = tryParseDigest(digest);
    if (!d) throw new TypeError(`invalid digest ${JSON.stringify(digest.slice(0, 200))}`);
    const start = o.range?.start ?? 0;
    const rangeHeader = (from: number): Record<string, string> => (o.range || from > 0 ? { Range: `bytes=${from}-${o.range?.end ?? ''}` } : {});
    const open = (from: number): Promise<HttpResponse & { url: URL }> =>
      c.send({ method: 'GET', url: `/v2/${repo}/blobs/${digest}`, headers: rangeHeader(from), scopes: [`repository:${repo}:pull`], ok: [200, 206], ...sig(o.signal) });
    let res = await open(start);
    let total: number | undefined;
    if (res.status === 206) total = contentRangeTotal(res.header('content-range'))?.total;
    else total = res.header('content-length') !== undefined ? Number(res.header('content-length')) : undefined;
    total ??= o.size;
    if (o.size !== undefined && total !== undefined && total !== o.size) {
      res.body.destroy();
      throw new SizeMismatchError(o.size, total, `GET ${res.url.href}`);
    }
    const endExcl = o.range?.end !== undefined ? Math.min(o.range.end + 1, total ?? Infinity) : (total ?? Infinity);
    const full = !o.range || (start === 0 && o.range.end === undefined);
    const hash: Hash | undefined = full && o.verify !== false ? createHash(d.algorithm as DigestAlgorithm) : undefined;
    const where = `GET ${res.url.href}`;
    async function* body(): AsyncGenerator<Buffer> {
      let pos = start;
      let resumes = 0;
      for (;;) {
        // A registry that ignored the Range answers 200 from byte 0.
        let skip = res.status === 200 ? pos : 0;
        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            let b = chunk;
            if (skip > 0) {
              if (b.length <= skip) {
                skip -= b.length;
                continue;
              }
              b = b.subarray(skip);
              skip = 0;
            }
            if (pos + b.length > endExcl) b = b.subarray(0, endExcl - pos);
            if (b.length === 0) continue;
            hash?.update(b);
            pos += b.length;
            yield b;
            if (pos >= endExcl) break;
          }
          if (pos >= endExcl || endExcl === Infinity) break;
          throw Object.assign(new Error('premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
        } catch (e) {
          if (!isRetryableNetworkError(e) || resumes + 1 >= c.retry.attempts) throw e;
          resumes++;
          res.body.destroy();
          await sleep(backoffDelay(resumes, c.retry), o.signal);
          res = await open(pos);
        }
      }
      res.body.destroy();
      if (endExcl !== Infinity && pos !== endExcl) throw new SizeMismatchError(endExcl - start, pos - start, where);
      if (hash) {
        const actual = `${d!.algorithm}:${hash.digest('hex')}`;
        if (actual !== d!.digest) throw new DigestMismatchError(d!.digest, actual, where);
      }
    }
    const stream = Readable.from(body(), { objectMode: false, highWaterMark: 256 * 1024 });
    return { stream, length: endExcl === Infinity ? -1 : endExcl - start, ...(total !== undefined ? { totalSize: total } : {}) };
  }

  async function startUpload(repo: string, query: Record<string, string | undefined>, scopes: string[], signal?: AbortSignal): Promise<{ res: HttpResponse & { url: URL }; location?: URL; minChunk: number }> {
    const res = await c.send({ method: 'POST', url: `/v2/${repo}/blobs/uploads/`, query, scopes, ok: [201, 202], ...sig(signal) });
    await discard(res);
    const loc = res.header('location');
    return { res, ...(loc ? { location: new URL(loc, res.url) } : {}), minChunk: Number(res.header('oci-chunk-min-length') ?? 0) || 0 };
  }

  async function pushBlob(repo: string, source: BlobSource, o: PushBlobOptions = {}): Promise<PushBlobResult> {
    parseRepoName(repo);
    const bytes = Buffer.isBuffer(source) ? source : source instanceof Uint8Array ? Buffer.from(source.buffer, source.byteOffset, source.byteLength) : undefined;
    let digest = o.digest ? tryParseDigest(o.digest) : undefined;
    if (o.digest && !digest) throw new TypeError(`invalid digest ${JSON.stringify(o.digest.slice(0, 200))}`);
    const algorithm: DigestAlgorithm = digest?.algorithm ?? 'sha256';
    if (bytes && !digest) digest = tryParseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`)!;
    let size = bytes ? bytes.length : o.size;
    if (bytes && o.size !== undefined && o.size !== bytes.length) throw new SizeMismatchError(o.size, bytes.length, 'blob source');
    const scopes = [`repository:${repo}:pull,push`];
    if (digest && !o.skipExistsCheck) {
      const have = await headBlob(repo, digest.digest, o.signal);
      if (have) return { digest: digest.digest, size: have.size, outcome: 'exists', resumed: 0 };
    }
    let up: Awaited<ReturnType<typeof startUpload>> | undefined;
    if (digest && o.from && o.from !== repo) {
      parseRepoName(o.from);
      up = await startUpload(repo, { mount: digest.digest, from: o.from }, [...scopes, `repository:${o.from}:pull`], o.signal);
      if (up.res.status === 201) return { digest: digest.digest, size: size ?? (await headBlob(repo, digest.digest, o.signal))?.size ?? 0, outcome: 'mounted', resumed: 0 };
    }
    const reopen = typeof source === 'function' ? source : undefined;
    // An earlier process's session for this blob: continue it if the registry still has it.
    let start = 0;
    if (!up && o.session && digest && size !== undefined && reopen) {
      const st = await c.send({ method: 'GET', url: new URL(o.session, c.url), scopes, ok: [204, 200, 404, 400, 416], ...sig(o.signal) }).catch(() => undefined);
      if (st) await discard(st);
      if (st && (st.status === 204 || st.status === 200)) {
        const at = uploadOffset(st) ?? 0;
        if (at <= size) {
          up = { res: st, location: new URL(st.header('location') ?? o.session, st.url), minChunk: 0 };
          start = at;
        }
      }
    }
    up ??= await startUpload(repo, {}, scopes, o.signal);
    if (!up.location) throw new RegistryError({ status: up.res.status, method: 'POST', url: up.res.url, bodyText: 'upload started without a Location' });
    let location = up.location;
    o.onSession?.(location.href);
    const chunk = Math.max(o.chunkSize ?? c.chunkSize, up.minChunk, 1);
    const monolithic = o.monolithicThreshold ?? c.monolithicThreshold;

    let reader: ChunkReader | undefined = bytes ? undefined : new ChunkReader(reopen ? await reopen(start) : (source as Readable));
    // The hash of what was fed when the digest is unknown, and its copy at the last acknowledged offset.
    let hash: Hash | undefined = digest ? undefined : createHash(algorithm);
    let acked = { offset: start, hash: hash?.copy() };
    let offset = start;
    let resumed = 0;
    const feed = (b: Buffer): void => void hash?.update(b);
    const octet = { 'Content-Type': 'application/octet-stream' };

    const finish = async (body?: Buffer | Readable, length?: number): Promise<void> => {
      const d = digest?.digest ?? `${algorithm}:${hash!.digest('hex')}`;
      const target = new URL(location);
      target.searchParams.set('digest', d);
      const headers: Record<string, string> = { ...octet };
      if (length !== undefined && !Buffer.isBuffer(body)) headers['Content-Length'] = String(length);
      let res: HttpResponse & { url: URL };
      try {
        res = await c.send({ method: 'PUT', url: target, headers, ...(body !== undefined ? { body } : {}), scopes, ok: [201, 204], ...(body !== undefined ? { retry: false } : {}), ...sig(o.signal) });
      } catch (e) {
        // The PUT may have completed with its answer lost: then the retry finds the upload gone but the blob there.
        if (body === undefined && e instanceof RegistryError && e.status === 404 && (await headBlob(repo, d, o.signal))) {
          digest = tryParseDigest(d);
          return;
        }
        throw e;
      }
      await discard(res);
      const announced = res.header('docker-content-digest');
      if (announced && announced !== d) throw new DigestMismatchError(d, announced, `PUT ${res.url.href}`);
      digest = tryParseDigest(d);
    };

    /** The last reading of an ambiguous `Range: 0-0` upload status (see below). */
    let zeroGuess: 0 | 1 | undefined;
    try {
      for (;;) {
        try {
          if (size !== undefined && offset === size) {
            await finish();
            break;
          }
          if (digest && size !== undefined && offset === 0 && size <= monolithic) {
            await finish(bytes ?? reader!.take(size, feed), size);
            offset = size;
            break;
          }
          const n = size !== undefined ? Math.min(chunk, size - offset) : Infinity;
          const body = bytes ? bytes.subarray(offset, offset + n) : reader!.take(n, feed);
          const headers: Record<string, string> = { ...octet };
          if (Number.isFinite(n)) {
            headers['Content-Range'] = `${offset}-${offset + n - 1}`;
            if (!bytes) headers['Content-Length'] = String(n);
          }
          const res = await c.send({ method: 'PATCH', url: location, headers, body, scopes, ok: [202, 204], retry: false, ...sig(o.signal) });
          await discard(res);
          if (res.header('location')) {
            location = new URL(res.header('location')!, res.url);
            o.onSession?.(location.href);
          }
          offset = uploadOffset(res) ?? offset + (Number.isFinite(n) ? n : 0);
          if (size === undefined) size = offset;
          if (hash) acked = { offset, hash: hash.copy() };
          o.onProgress?.(offset);
        } catch (e) {
          const transient = isRetryableNetworkError(e) || (e instanceof RegistryError && (isRetryableStatus(e.status) || e.status === 416));
          if (!transient || (!bytes && !reopen) || resumed + 1 >= c.retry.attempts + 2) throw e;
          resumed++;
          await sleep(backoffDelay(resumed, c.retry), o.signal);
          const st = await c.send({ method: 'GET', url: location, scopes, ok: [204, 200, 404], ...sig(o.signal) });
          await discard(st);
          if (st.status === 404) {
            // The registry gave the session up (distribution does when a cut request left a partial write
            // behind its state token): start over in a new session.
            await cancelUpload(location.href).catch(() => undefined);
            const fresh = await startUpload(repo, {}, scopes, o.signal);
            if (!fresh.location) throw e;
            location = fresh.location;
            offset = 0;
            acked = { offset: 0, hash: hash ? createHash(algorithm) : undefined };
          } else {
            if (st.header('location')) location = new URL(st.header('location')!, st.url);
            offset = uploadOffset(st) ?? 0;
            // `0-0` is both "nothing yet" and "one byte" (distribution writes it for both): nothing first, and
            // one byte if the registry refused that guess with a 416 last time round.
            if (/^(?:bytes=)?0-0$/.test(st.header('range') ?? '')) offset = zeroGuess = zeroGuess === 0 && e instanceof RegistryError && e.status === 416 ? 1 : 0;
          }
          if (size === undefined && !digest && offset < acked.offset) throw e;
          if (!bytes) {
            reader!.destroy();
            if (hash) {
              const base = acked.offset <= offset ? acked.offset : 0;
              hash = base === acked.offset && acked.hash ? acked.hash.copy() : createHash(algorithm);
              reader = new ChunkReader(await reopen!(base));
              await reader.skip(offset - base, feed);
            } else reader = new ChunkReader(await reopen!(offset));
          }
          o.onProgress?.(offset);
        }
      }
    } catch (e) {
      reader?.destroy();
      await cancelUpload(location.href).catch(() => undefined);
      throw e;
    }
    reader?.destroy();
    return { digest: digest!.digest, size: size ?? offset, outcome: 'uploaded', resumed };
  }

  async function copyBlob(src: { client: RegistryClient; repo: string }, repo: string, blob: BlobInfo, o: { signal?: AbortSignal; onProgress?: (n: number) => void } = {}): Promise<PushBlobResult> {
    const sameRegistry = src.client.url.origin === c.url.origin;
    const open = async (offset: number): Promise<Readable> =>
      (await src.client.getBlob(src.repo, blob.digest, { size: blob.size, ...(offset > 0 ? { range: { start: offset } } : {}), ...sig(o.signal) })).stream;
    return pushBlob(repo, open, { digest: blob.digest, size: blob.size, ...(sameRegistry && src.repo !== repo ? { from: src.repo } : {}), ...sig(o.signal), ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
  }

  async function deleteBlob(repo: string, digest: string, signal?: AbortSignal): Promise<void> {
    parseRepoName(repo);
    const res = await c.send({ method: 'DELETE', url: `/v2/${repo}/blobs/${digest}`, scopes: [`repository:${repo}:delete`], ok: [202, 200, 204], ...sig(signal) });
    await discard(res);
  }

  async function mountBlob(repo: string, digest: string, from: string, signal?: AbortSignal): Promise<boolean> {
    parseRepoName(repo);
    parseRepoName(from);
    const up = await startUpload(repo, { mount: digest, from }, [`repository:${repo}:pull,push`, `repository:${from}:pull`], signal);
    if (up.res.status === 201) return true;
    if (up.location) await cancelUpload(up.location.href, signal).catch(() => undefined);
    return false;
  }

  async function cancelUpload(location: string, signal?: AbortSignal): Promise<void> {
    const u = new URL(location, c.url);
    const m = /^\/v2\/(.+)\/blobs\/uploads\//.exec(u.pathname);
    const res = await c.send({ method: 'DELETE', url: u, scopes: m ? [`repository:${m[1]}:pull,push`] : [], ok: [204, 200, 202, 404], ...sig(signal) });
    await discard(res);
  }

  return { headBlob, getBlob, pushBlob, copyBlob, deleteBlob, mountBlob, cancelUpload };
}
