/**
 * The S3 driver (AWS SDK v3), for AWS S3 and S3-protocol servers (MinIO, Ceph RGW, ...). Keys follow
 * distribution's layout: `<rootdirectory>/docker/registry/v2/...` with the leading `/` trimmed.
 *
 * S3 objects are immutable, so a file that grows by appends (an upload written by several PATCH requests,
 * possibly on different instances) is stored as *segments*: the base object at `<key>` followed by objects
 * `<key>~/<start offset, 16 digits>`, each written by one writer through a multipart upload of
 * `chunksize` parts. `~` never occurs in a validated path, so segments cannot collide with real files, and
 * every piece of state lives in the bucket: any instance can continue any upload. Readers see the base and
 * its contiguous segments as one file; `move` composes them server-side into one object (UploadPartCopy,
 * only segments smaller than S3's 5 MiB part minimum pass through this process), which is how a finished
 * upload becomes a blob. Only CreateMultipartUpload, UploadPart(Copy) and CompleteMultipartUpload are needed
 * of the server's multipart API (no ListParts or ListMultipartUploads), so small S3 implementations work.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { Readable, Writable } from 'node:stream';
import { createRequire } from 'node:module';
import type * as S3 from '@aws-sdk/client-s3';
import type { CompletedPart, ServerSideEncryption, StorageClass, ObjectCannedACL } from '@aws-sdk/client-s3';
import type * as Presigner from '@aws-sdk/s3-request-presigner';
import { type FileInfo, type FileWriter, type IoOptions, PathNotFoundError, type StorageDriver, type WriterOptions } from './driver.ts';

/** The driver's options: distribution's `storage.s3` keys, plus whether blob reads may redirect. */
export interface S3DriverOptions {
  bucket: string;
  region: string;
  regionendpoint?: string;
  forcepathstyle?: boolean;
  accesskey?: string;
  secretkey?: string;
  sessiontoken?: string;
  rootdirectory?: string;
  secure?: boolean;
  skipverify?: boolean;
  /** Multipart part size for writes (>= 5 MiB; default 10 MiB). */
  chunksize?: number;
  /** Part size of server-side copies above 5 GiB (default 32 MiB is distribution's; S3 caps a copy part at 5 GiB). */
  multipartcopychunksize?: number;
  storageclass?: string;
  encrypt?: boolean;
  keyid?: string;
  objectacl?: string;
  useragent?: string;
  /** Presigned URLs for blob GET/HEAD (distribution's default; `storage.redirect.disable` turns it off). */
  redirect?: boolean;
  /** Lifetime of presigned URLs in seconds (default 20 minutes, as distribution). */
  redirectExpirySeconds?: number;
}

// The SDK is loaded when an s3 driver is made, not when this module is: it adds ~20 MiB to every process.
const load = createRequire(import.meta.url);

const MiB = 1024 * 1024;
/** S3's smallest part other than the last. */
const MIN_PART = 5 * MiB;
/** S3's largest single copy (CopyObject, or one UploadPartCopy range). */
const MAX_COPY = 5 * 1024 * MiB;
const SEGMENT_MARK = '~/';
const OFFSET_DIGITS = 16;

interface Piece {
  key: string;
  size: number;
  modTime: Date;
  etag?: string;
}

function isMissing(e: unknown): boolean {
  const err = e as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  return err?.name === 'NoSuchKey' || err?.name === 'NotFound' || err?.Code === 'NoSuchKey' || err?.$metadata?.httpStatusCode === 404;
}

/** Encodes a key for `x-amz-copy-source` (bucket/key, `/` kept). */
function copySource(bucket: string, key: string): string {
  return `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
}

export function s3Driver(o: S3DriverOptions): StorageDriver {
  const sdk = load('@aws-sdk/client-s3') as typeof S3;
  let signer: typeof Presigner | undefined;
  const presigner = (): typeof Presigner => (signer ??= load('@aws-sdk/s3-request-presigner') as typeof Presigner);
  const secure = o.secure ?? true;
  let endpoint = o.regionendpoint;
  if (endpoint && !/^https?:\/\//.test(endpoint)) endpoint = `${secure ? 'https' : 'http'}://${endpoint}`;
  const client = new sdk.S3Client({
    region: o.region,
    ...(endpoint ? { endpoint } : {}),
    forcePathStyle: o.forcepathstyle ?? false,
    ...(o.accesskey && o.secretkey ? { credentials: { accessKeyId: o.accesskey, secretAccessKey: o.secretkey, ...(o.sessiontoken ? { sessionToken: o.sessiontoken } : {}) } } : {}),
    // Checksums beyond what S3 requires cost a pass over every byte and are not understood by every S3 server.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 128 }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: 128, rejectUnauthorized: !o.skipverify }),
      connectionTimeout: 10_000,
    },
    ...(o.useragent ? { customUserAgent: o.useragent } : {}),
  });
  const bucket = o.bucket;
  const partSize = Math.max(o.chunksize ?? 10 * MiB, MIN_PART);
  const copyPartSize = Math.min(Math.max(o.multipartcopychunksize ?? 32 * MiB, MIN_PART), MAX_COPY);
  const root = (o.rootdirectory ?? '').replace(/^\/+|\/+$/g, '');
  const key = (path: string): string => (root ? `${root}${path}` : path.slice(1));
  const dirPrefix = (path: string): string => (path === '/' ? (root ? `${root}/` : '') : `${key(path)}/`);
  const segPrefix = (path: string): string => `${key(path)}${SEGMENT_MARK}`;
  const segKey = (path: string, offset: number): string => `${segPrefix(path)}${String(offset).padStart(OFFSET_DIGITS, '0')}`;
  const writeParams = {
    ...(o.storageclass ? { StorageClass: o.storageclass as StorageClass } : {}),
    ...(o.encrypt ? { ServerSideEncryption: (o.keyid ? 'aws:kms' : 'AES256') as ServerSideEncryption, ...(o.keyid ? { SSEKMSKeyId: o.keyid } : {}) } : {}),
    ...(o.objectacl ? { ACL: o.objectacl as ObjectCannedACL } : {}),
  };
  const opts = (io?: IoOptions): { abortSignal?: AbortSignal } => (io?.signal ? { abortSignal: io.signal } : {});

  async function* listKeys(prefix: string, delimiter: string | undefined, io?: IoOptions): AsyncGenerator<{ keys: Piece[]; prefixes: string[] }> {
    let token: string | undefined;
    do {
      const r = await client.send(new sdk.ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(delimiter ? { Delimiter: delimiter } : {}), ...(token ? { ContinuationToken: token } : {}) }), opts(io));
      yield {
        keys: (r.Contents ?? []).map((c) => ({ key: c.Key!, size: c.Size ?? 0, modTime: c.LastModified ?? new Date(0), ...(c.ETag ? { etag: c.ETag } : {}) })),
        prefixes: (r.CommonPrefixes ?? []).map((p) => p.Prefix!),
      };
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }
  async function allKeys(prefix: string, io?: IoOptions): Promise<Piece[]> {
    const out: Piece[] = [];
    for await (const page of listKeys(prefix, undefined, io)) out.push(...page.keys);
    return out;
  }
  async function head(k: string, io?: IoOptions): Promise<Piece | undefined> {
    try {
      const r = await client.send(new sdk.HeadObjectCommand({ Bucket: bucket, Key: k }), opts(io));
      return { key: k, size: r.ContentLength ?? 0, modTime: r.LastModified ?? new Date(0), ...(r.ETag ? { etag: r.ETag } : {}) };
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }
  /** The segment objects of a path, in offset order. */
  async function segments(path: string, io?: IoOptions): Promise<Piece[]> {
    return (await allKeys(segPrefix(path), io)).sort((a, b) => (a.key < b.key ? -1 : 1));
  }
  /** The base object and its contiguous segments (a segment not starting where the file ends is ignored). */
  async function pieces(path: string, io?: IoOptions): Promise<{ pieces: Piece[]; size: number; extra: Piece[] } | undefined> {
    const [base, segs] = await Promise.all([head(key(path), io), segments(path, io)]);
    if (!base && segs.length === 0) return undefined;
    const out: Piece[] = base ? [base] : [];
    let size = base?.size ?? 0;
    const extra: Piece[] = [];
    for (const s of segs) {
      if (Number(s.key.slice(-OFFSET_DIGITS)) === size && extra.length === 0) {
        out.push(s);
        size += s.size;
      } else extra.push(s);
    }
    return { pieces: out, size, extra };
  }
  async function deleteKeys(keys: string[], io?: IoOptions): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const r = await client.send(new sdk.DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }), opts(io));
      const failed = (r.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) throw new Error(`S3 delete failed for ${failed.length} keys: ${failed[0]!.Code} ${failed[0]!.Message}`);
    }
  }
  async function getRange(k: string, start: number, end: number, io?: IoOptions): Promise<Readable> {
    const r = await client.send(new sdk.GetObjectCommand({ Bucket: bucket, Key: k, Range: `bytes=${start}-${end}` }), opts(io));
    return r.Body as Readable;
  }
  async function readRange(k: string, start: number, end: number, io?: IoOptions): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of await getRange(k, start, end, io)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** Bytes `[offset, last]` of a file made of pieces, piece after piece. */
  async function* readPieces(p: { pieces: Piece[] }, offset: number, last: number, io?: IoOptions): AsyncGenerator<Buffer> {
    let base = 0;
    for (const piece of p.pieces) {
      const from = Math.max(offset - base, 0);
      const to = Math.min(last - base, piece.size - 1);
      if (from <= to) for await (const c of await getRange(piece.key, from, to, io)) yield c as Buffer;
      base += piece.size;
    }
  }

  /** Writes `pieces` (in order) into one object at `dst`: server-side copies where S3 allows, small pieces merged here. */
  async function compose(list: Piece[], dst: string, io?: IoOptions): Promise<void> {
    const { UploadId } = await client.send(new sdk.CreateMultipartUploadCommand({ Bucket: bucket, Key: dst, ...writeParams }), opts(io));
    const parts: CompletedPart[] = [];
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const uploadPending = async (): Promise<void> => {
      const body = Buffer.concat(pending, pendingBytes);
      const PartNumber = parts.length + 1;
      const r = await client.send(new sdk.UploadPartCommand({ Bucket: bucket, Key: dst, UploadId, PartNumber, Body: body, ContentLength: body.length }), opts(io));
      parts.push({ ETag: r.ETag!, PartNumber });
      pending = [];
      pendingBytes = 0;
    };
    try {
      for (const p of list) {
        let off = 0;
        while (off < p.size) {
          const rest = p.size - off;
          if (pendingBytes === 0 && rest >= MIN_PART) {
            // Copy a range, leaving behind either nothing or a valid part's worth.
            let n = Math.min(rest, p.size > MAX_COPY ? copyPartSize : MAX_COPY);
            if (rest - n > 0 && rest - n < MIN_PART) n = rest - MIN_PART;
            const PartNumber = parts.length + 1;
            const r = await client.send(
              new sdk.UploadPartCopyCommand({ Bucket: bucket, Key: dst, UploadId, PartNumber, CopySource: copySource(bucket, p.key), CopySourceRange: `bytes=${off}-${off + n - 1}` }),
              opts(io),
            );
            parts.push({ ETag: r.CopyPartResult!.ETag!, PartNumber });
            off += n;
          } else {
            const n = Math.min(rest, partSize - pendingBytes);
            const b = await readRange(p.key, off, off + n - 1, io);
            pending.push(b);
            pendingBytes += b.length;
            off += n;
            if (pendingBytes >= partSize) await uploadPending();
          }
        }
      }
      if (pendingBytes > 0 || parts.length === 0) await uploadPending();
      await client.send(new sdk.CompleteMultipartUploadCommand({ Bucket: bucket, Key: dst, UploadId, MultipartUpload: { Parts: parts } }), opts(io));
    } catch (e) {
      await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key: dst, UploadId })).catch(() => undefined);
      throw e;
    }
  }
  async function copy(p: Piece, dst: string, io?: IoOptions): Promise<void> {
    if (p.size > MAX_COPY) return compose([p], dst, io);
    await client.send(new sdk.CopyObjectCommand({ Bucket: bucket, Key: dst, CopySource: copySource(bucket, p.key), ...writeParams }), opts(io));
  }

  /** Streams into `target` through a multipart upload of `partSize` parts, one part uploading while the next fills. */
  function partWriter(path: string, target: string, start: number, createEmpty: boolean, io?: IoOptions & WriterOptions): FileWriter {
    let chunks: Buffer[] = [];
    let buffered = 0;
    let uploadId: string | undefined;
    const parts: CompletedPart[] = [];
    let uploadedBytes = 0;
    let inflight: Promise<void> | undefined;
    let failed = false;
    let finished: Promise<void> | undefined;
    let persisted = 0;
    const uploadPart = async (body: Buffer): Promise<void> => {
      uploadId ??= (await client.send(new sdk.CreateMultipartUploadCommand({ Bucket: bucket, Key: target, ...writeParams }), opts(io))).UploadId!;
      const PartNumber = parts.length + 1;
      const r = await client.send(new sdk.UploadPartCommand({ Bucket: bucket, Key: target, UploadId: uploadId, PartNumber, Body: body, ContentLength: body.length }), opts(io));
      parts.push({ ETag: r.ETag!, PartNumber });
      uploadedBytes += body.length;
    };
    /** The gathered chunks as one part body; once copied they go back to the caller (onWritten). */
    const gathered = async (): Promise<Buffer> => {
      const body = Buffer.concat(chunks, buffered);
      const copied = chunks;
      chunks = [];
      buffered = 0;
      if (copied.length > 0) await io?.onWritten?.(copied);
      return body;
    };
    const startPart = async (): Promise<void> => {
      const body = await gathered();
      await inflight;
      inflight = uploadPart(body);
      inflight.catch(() => {
        failed = true;
      });
    };
    const stream = new Writable({
      highWaterMark: MiB,
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk);
        buffered += chunk.length;
        if (buffered < partSize) return cb();
        startPart().then(() => cb(), cb);
      },
    });
    /** Makes what was written durable: the parts so far plus what is buffered (unless a part failed). */
    const finish = (): Promise<void> =>
      (finished ??= (async () => {
        await inflight?.catch(() => undefined);
        if (failed) chunks = [];
        const rest = await gathered();
        if (!uploadId) {
          if (rest.length > 0 || createEmpty) {
            await client.send(new sdk.PutObjectCommand({ Bucket: bucket, Key: target, Body: rest, ContentLength: rest.length, ...writeParams }), opts(io));
          }
          persisted = rest.length;
          return;
        }
        if (rest.length > 0 && !failed) await uploadPart(rest);
        if (parts.length === 0) {
          await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key: target, UploadId: uploadId })).catch(() => undefined);
          persisted = 0;
          return;
        }
        await client.send(new sdk.CompleteMultipartUploadCommand({ Bucket: bucket, Key: target, UploadId: uploadId, MultipartUpload: { Parts: parts } }), opts(io));
        persisted = uploadedBytes;
      })());
    return {
      stream,
      size: () => start + (finished ? persisted : uploadedBytes + buffered),
      commit: finish,
      close: finish,
      cancel: async () => {
        finished ??= (async () => {
          await inflight?.catch(() => undefined);
          if (uploadId) await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key: target, UploadId: uploadId })).catch(() => undefined);
        })();
        await finished;
        await driver.delete(path).catch(() => undefined);
      },
      discard: async () => {
        finished ??= (async () => {
          await inflight?.catch(() => undefined);
          if (uploadId) await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key: target, UploadId: uploadId })).catch(() => undefined);
        })();
        await finished.catch(() => undefined);
        // A whole file this writer created or replaced goes, as by cancel; an appended segment goes alone.
        if (createEmpty) await driver.delete(path).catch(() => undefined);
        else await deleteKeys([target], io);
      },
    };
  }

  const driver: StorageDriver = {
    name: 's3',
    async getContent(path, io) {
      const max = io?.maxSize ?? 4 * MiB;
      const p = await pieces(path, io);
      if (!p) throw new PathNotFoundError(path);
      if (p.size > max) throw new RangeError(`file ${path} is too large`);
      const chunks: Buffer[] = [];
      for await (const c of readPieces(p, 0, p.size - 1, io)) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    },
    async putContent(path, data, io) {
      // The put replaces the base object; segments left by appends (only ever on upload data) go after it.
      const [segs] = await Promise.all([
        segments(path, io),
        client.send(new sdk.PutObjectCommand({ Bucket: bucket, Key: key(path), Body: data, ContentLength: data.byteLength, ...writeParams }), opts(io)),
      ]);
      if (segs.length > 0) await deleteKeys(segs.map((s) => s.key), io);
    },
    async reader(path, offset = 0, io) {
      const p = await pieces(path, io);
      if (!p) throw new PathNotFoundError(path);
      const last = Math.min(io?.end ?? p.size - 1, p.size - 1);
      if (offset > last) return Readable.from([]);
      if (p.pieces.length === 1) return getRange(p.pieces[0]!.key, offset, last, io);
      return Readable.from(readPieces(p, offset, last, io));
    },
    async writer(path, io) {
      if (io?.append) {
        const p = await pieces(path, io);
        if (p?.extra.length) await deleteKeys(p.extra.map((s) => s.key), io);
        // A file that does not exist yet is created whole; otherwise the bytes become a new segment.
        return p ? partWriter(path, segKey(path, p.size), p.size, false, io) : partWriter(path, key(path), 0, true, io);
      }
      const segs = await segments(path, io);
      if (segs.length > 0) await deleteKeys(segs.map((s) => s.key), io);
      return partWriter(path, key(path), 0, true, io);
    },
    async stat(path, io): Promise<FileInfo> {
      if (path !== '/') {
        const p = await pieces(path, io);
        if (p) {
          const modTime = new Date(Math.max(...p.pieces.map((x) => x.modTime.getTime())));
          return { path, size: p.size, modTime, isDir: false, version: `${p.pieces[0]?.etag ?? ''}/${p.pieces.length}/${p.size}` };
        }
        const r = await client.send(new sdk.ListObjectsV2Command({ Bucket: bucket, Prefix: dirPrefix(path), MaxKeys: 1 }), opts(io));
        if ((r.KeyCount ?? r.Contents?.length ?? 0) === 0) throw new PathNotFoundError(path);
      }
      return { path, size: 0, modTime: new Date(0), isDir: true };
    },
    async list(path, io) {
      const prefix = dirPrefix(path);
      const names = new Set<string>();
      for await (const page of listKeys(prefix, '/', io)) {
        for (const k of page.keys) names.add(k.key.slice(prefix.length));
        for (const p of page.prefixes) names.add(p.slice(prefix.length, p.endsWith(SEGMENT_MARK) ? -SEGMENT_MARK.length : -1));
      }
      names.delete('');
      if (names.size === 0 && path !== '/') throw new PathNotFoundError(path);
      return [...names];
    },
    async move(src, dst, io) {
      const p = await pieces(src, io);
      if (!p) throw new PathNotFoundError(src);
      const dstSegs = await segments(dst, io);
      if (dstSegs.length > 0) await deleteKeys(dstSegs.map((s) => s.key), io);
      const nonEmpty = p.pieces.filter((x) => x.size > 0);
      if (nonEmpty.length === 0) await client.send(new sdk.PutObjectCommand({ Bucket: bucket, Key: key(dst), Body: Buffer.alloc(0), ContentLength: 0, ...writeParams }), opts(io));
      else if (nonEmpty.length === 1) await copy(nonEmpty[0]!, key(dst), io);
      else await compose(nonEmpty, key(dst), io);
      await deleteKeys([...p.pieces, ...p.extra].map((x) => x.key), io);
    },
    async delete(path, io) {
      const keys =
        path === '/'
          ? await allKeys(dirPrefix(path), io)
          : (await Promise.all([head(key(path), io), allKeys(segPrefix(path), io), allKeys(dirPrefix(path), io)])).flatMap((x) => (Array.isArray(x) ? x : x ? [x] : []));
      if (keys.length === 0) throw new PathNotFoundError(path);
      await deleteKeys(keys.map((k) => k.key), io);
    },
    async redirectUrl(path, method) {
      if (!o.redirect) return undefined;
      const input = { Bucket: bucket, Key: key(path) };
      const expiresIn = o.redirectExpirySeconds ?? 20 * 60;
      return presigner().getSignedUrl(client, method === 'HEAD' ? new sdk.HeadObjectCommand(input) : new sdk.GetObjectCommand(input), { expiresIn });
    },
  };
  return driver;
}
