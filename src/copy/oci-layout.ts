/**
 * OCI image-layout directories (`oci:DIR[:TAG]`), read and written the way skopeo and umoci do: an
 * `oci-layout` file (`{"imageLayoutVersion":"1.0.0"}`), `index.json` listing the root manifests with tags as
 * `org.opencontainers.image.ref.name` annotations, and every blob (manifests included) at `blobs/<alg>/<hex>`.
 *
 * Writes never leave a corrupt file under a visible name: blobs stream into a temporary file in
 * `<DIR>/.berth-tmp/`, hashed on the way, and are renamed into `blobs/` only after size and digest match
 * (then the directory is fsynced); `index.json` and `oci-layout` are replaced by an fsynced temporary file and a
 * rename. A blob write that is interrupted leaves its prefix as `.berth-tmp/<alg>-<hex>.partial`; the next
 * write of that digest claims it by renaming it to a private name, re-hashes it and resumes with `open(size)`,
 * and starts over if the finished blob does not verify. Concurrent writes of one digest in this process wait
 * for each other; `index.json` updates in this process are serialised (across processes the last writer wins,
 * as with skopeo).
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open as openFile, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { type Digest, digestOf, isDigest, newHash, parseDigest } from '../spec/digest.ts';
import { OciError } from '../spec/errors.ts';
import { type Descriptor, MAX_MANIFEST_SIZE, parseDescriptor } from '../spec/manifest.ts';
import { MediaType } from '../spec/media-types.ts';
import { HashTap, KeyedMutex, fsyncDir, tempName, writeFileAtomic } from './files.ts';
import type { BlobDesc, BlobOpener, BlobRead, ImageEndpoint, ManifestData, ManifestTarget, PutBlobOptions } from './transport.ts';

export const REF_NAME = 'org.opencontainers.image.ref.name';
export const LAYOUT_VERSION = '1.0.0';
const TMP = '.berth-tmp';

// skopeo's (containers/image oci/internal) grammar for the ref.name of an `oci:` reference.
const REF_COMPONENT = '[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*';
const REF_RE = new RegExp(`^${REF_COMPONENT}(?:/${REF_COMPONENT})*$`);

/**
 * Splits what follows `oci:` into directory and tag, as skopeo does on Unix: at the FIRST `:` (so a tag such
 * as `example.com/app:v1` is possible, and DIR cannot contain `:`). An empty tag means none.
 */
export function parseOciReference(s: string): { dir: string; tag?: string } {
  const i = s.indexOf(':');
  const dir = i < 0 ? s : s.slice(0, i);
  const tag = i < 0 ? '' : s.slice(i + 1);
  if (dir === '') throw new Error(`oci:${s}: missing directory`);
  if (tag === '') return { dir };
  if (!REF_RE.test(tag)) throw new Error(`oci:${s}: invalid image name ${JSON.stringify(tag)}`);
  return { dir, tag };
}

/** The media type a manifest declares, or the one its shape implies (OCI manifests may omit it). */
export function sniffMediaType(bytes: Buffer): string {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new OciError('MANIFEST_INVALID', 'not JSON');
  }
  if (typeof doc !== 'object' || doc === null) throw new OciError('MANIFEST_INVALID', 'not a JSON object');
  const d = doc as { mediaType?: unknown; manifests?: unknown };
  if (typeof d.mediaType === 'string') return d.mediaType;
  return Array.isArray(d.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
}

interface IndexDoc {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  [k: string]: unknown;
}

/** An OCI image layout directory as a copy source and destination. */
export class OciLayout implements ImageEndpoint {
  readonly name: string;
  readonly supportsIndex = true;
  private readonly indexLock = new KeyedMutex();
  private readonly blobLock = new KeyedMutex();
  private ready?: Promise<void>;

  constructor(readonly dir: string) {
    this.name = `oci:${dir}`;
  }

  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.dir, 'blobs', algorithm, hex);
  }

  /** Reads `index.json`, after checking `oci-layout`. Throws when DIR is not a layout. */
  async readIndex(): Promise<IndexDoc> {
    let layout: { imageLayoutVersion?: unknown };
    try {
      layout = JSON.parse(await readFile(join(this.dir, 'oci-layout'), 'utf8')) as typeof layout;
    } catch (e) {
      throw new Error(`${this.name}: not an OCI image layout (oci-layout: ${(e as Error).message})`);
    }
    if (layout.imageLayoutVersion !== LAYOUT_VERSION) throw new Error(`${this.name}: unsupported imageLayoutVersion ${String(layout.imageLayoutVersion)}`);
    const doc = JSON.parse(await readFile(join(this.dir, 'index.json'), 'utf8')) as IndexDoc;
    if (!Array.isArray(doc.manifests)) throw new Error(`${this.name}: index.json has no manifests array`);
    doc.manifests = doc.manifests.map((m, i) => parseDescriptor(m, `index.json manifests[${i}]`));
    return doc;
  }

  private async readManifestBlob(digest: Digest, signal?: AbortSignal): Promise<Buffer> {
    const p = this.blobPath(digest);
    const st = await stat(p).catch(() => undefined);
    if (!st) throw new OciError('MANIFEST_UNKNOWN', `${this.name}: ${digest}`);
    if (st.size > MAX_MANIFEST_SIZE) throw new OciError('MANIFEST_TOO_LARGE', `${this.name}: ${digest} has ${st.size} bytes`);
    return readFile(p, { signal });
  }

  async getManifest(ref: string | undefined, signal?: AbortSignal): Promise<ManifestData> {
    const index = await this.readIndex();
    let desc: Descriptor | undefined;
    if (ref === undefined) {
      if (index.manifests.length !== 1) throw new Error(`${this.name}: ${index.manifests.length} manifests in index.json, name one with oci:DIR:TAG`);
      desc = index.manifests[0];
    } else if (isDigest(ref)) {
      desc = index.manifests.find((m) => m.digest === ref);
      if (!desc) {
        const bytes = await this.readManifestBlob(ref, signal);
        return { bytes, mediaType: sniffMediaType(bytes), digest: ref };
      }
    } else {
      desc = index.manifests.find((m) => m.annotations?.[REF_NAME] === ref);
      if (!desc) throw new OciError('MANIFEST_UNKNOWN', `${this.name}: no manifest named ${ref}`);
    }
    const bytes = await this.readManifestBlob(desc!.digest, signal);
    return { bytes, mediaType: desc!.mediaType, digest: desc!.digest };
  }

  async openBlob(desc: BlobDesc, offset = 0, _signal?: AbortSignal): Promise<BlobRead> {
    const p = this.blobPath(desc.digest);
    const st = await stat(p).catch(() => undefined);
    if (!st?.isFile()) throw new OciError('BLOB_UNKNOWN', `${this.name}: ${desc.digest}`);
    if (offset > st.size) throw new OciError('RANGE_INVALID', `${this.name}: offset ${offset} past the end of ${desc.digest}`);
    return { stream: createReadStream(p, { start: offset }), size: st.size };
  }

  async listTags(): Promise<string[]> {
    const index = await this.readIndex();
    const tags: string[] = [];
    for (const m of index.manifests) {
      const t = m.annotations?.[REF_NAME];
      if (t !== undefined && !tags.includes(t)) tags.push(t);
    }
    return tags;
  }

  /** Root manifests in `index.json` whose `subject` is `digest` (where oras and this writer keep referrers). */
  async referrers(digest: Digest, signal?: AbortSignal): Promise<Descriptor[]> {
    const index = await this.readIndex();
    const out: Descriptor[] = [];
    for (const m of index.manifests) {
      if (m.mediaType !== MediaType.OciManifest && m.mediaType !== MediaType.OciIndex) continue;
      const bytes = await this.readManifestBlob(m.digest, signal).catch(() => undefined);
      if (!bytes) continue;
      const doc = JSON.parse(bytes.toString('utf8')) as { subject?: { digest?: string }; artifactType?: string; config?: { mediaType?: string }; annotations?: Record<string, string> };
      if (doc.subject?.digest !== digest) continue;
      const d: Descriptor = { mediaType: m.mediaType, digest: m.digest, size: m.size };
      const artifactType = doc.artifactType ?? doc.config?.mediaType;
      if (artifactType) d.artifactType = artifactType;
      if (doc.annotations) d.annotations = doc.annotations;
      out.push(d);
    }
    return out;
  }

  async hasBlob(digest: Digest): Promise<number | undefined> {
    const st = await stat(this.blobPath(digest)).catch(() => undefined);
    return st?.isFile() ? st.size : undefined;
  }

  /** Creates DIR, `blobs/`, the temporary directory, `oci-layout` and an empty `index.json` where missing. */
  private ensureLayout(): Promise<void> {
    this.ready ??= (async () => {
      await mkdir(join(this.dir, TMP), { recursive: true });
      await mkdir(join(this.dir, 'blobs'), { recursive: true });
      const layoutFile = join(this.dir, 'oci-layout');
      const existing = await readFile(layoutFile, 'utf8').catch(() => undefined);
      if (existing === undefined) {
        await writeFileAtomic(layoutFile, JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }), join(this.dir, TMP), this.dir);
      } else if ((JSON.parse(existing) as { imageLayoutVersion?: unknown }).imageLayoutVersion !== LAYOUT_VERSION) {
        throw new Error(`${this.name}: unsupported imageLayoutVersion in oci-layout`);
      }
      const indexFile = join(this.dir, 'index.json');
      if ((await stat(indexFile).catch(() => undefined)) === undefined) {
        await writeFileAtomic(indexFile, JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] }), join(this.dir, TMP), this.dir);
      }
    })();
    this.ready.catch(() => {
      this.ready = undefined;
    });
    return this.ready;
  }

  async putBlob(desc: BlobDesc, open: BlobOpener, opts: PutBlobOptions = {}): Promise<void> {
    const { algorithm, hex } = parseDigest(desc.digest);
    const final = this.blobPath(desc.digest);
    await this.blobLock.run(desc.digest, async () => {
      if ((await this.hasBlob(desc.digest)) === desc.size) {
        opts.onProgress?.(desc.size);
        return;
      }
      await this.ensureLayout();
      await mkdir(join(this.dir, 'blobs', algorithm), { recursive: true });
      const tmpDir = join(this.dir, TMP);
      const partial = join(tmpDir, `${algorithm}-${hex}.partial`);
      const mine = tempName(tmpDir, `.blob-${algorithm}-${hex.slice(0, 12)}-`);
      // Claim a partial file left by an interrupted write: only one claimant can win the rename.
      let offset = await rename(partial, mine).then(
        async () => (await stat(mine)).size,
        () => 0,
      );
      if (offset > desc.size) {
        await unlink(mine);
        offset = 0;
      }
      try {
        try {
          await this.writeBlob(desc, open, mine, offset, opts);
        } catch (e) {
          // A resumed prefix that does not verify (a torn write, a changed source): start over once.
          if (offset === 0 || !(e instanceof OciError) || opts.signal?.aborted) throw e;
          await unlink(mine).catch(() => undefined);
          await this.writeBlob(desc, open, mine, 0, opts);
        }
      } catch (e) {
        const keep = !(e instanceof OciError) && ((await stat(mine).catch(() => undefined))?.size ?? 0) > 0;
        if (keep) await rename(mine, partial).catch(() => unlink(mine).catch(() => undefined));
        else await unlink(mine).catch(() => undefined);
        throw e;
      }
      await rename(mine, final);
      await fsyncDir(join(this.dir, 'blobs', algorithm));
    });
  }

  /** Streams the rest of a blob into `file` from `offset`, then verifies size and digest and fsyncs it. */
  private async writeBlob(desc: BlobDesc, open: BlobOpener, file: string, offset: number, opts: PutBlobOptions): Promise<void> {
    const { algorithm } = parseDigest(desc.digest);
    const hash = newHash(algorithm);
    if (offset > 0) for await (const chunk of createReadStream(file, { end: offset - 1 })) hash.update(chunk as Buffer);
    opts.onProgress?.(offset);
    const tap = new HashTap(
      hash,
      (n) => opts.onProgress?.(offset + n),
      desc.size - offset,
      () => new OciError('SIZE_INVALID', `${desc.digest}: more than ${desc.size} bytes`),
    );
    const src = await open(offset);
    await pipeline(src, tap, createWriteStream(file, { flags: offset > 0 ? 'a' : 'w', mode: 0o644 }), { signal: opts.signal });
    const size = offset + tap.bytes;
    if (size !== desc.size) throw new OciError('SIZE_INVALID', `${desc.digest}: got ${size} bytes, expected ${desc.size}`);
    const got = `${algorithm}:${hash.digest('hex')}`;
    if (got !== desc.digest) throw new OciError('DIGEST_INVALID', `${desc.digest}: content hashes to ${got}`);
    const fh = await openFile(file, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  async putManifest(target: ManifestTarget, bytes: Buffer, mediaType: string, _signal?: AbortSignal): Promise<Digest> {
    await this.ensureLayout();
    const digest = digestOf(bytes);
    const final = this.blobPath(digest);
    if ((await this.hasBlob(digest)) !== bytes.length) {
      await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
      await writeFileAtomic(final, bytes, join(this.dir, TMP), join(this.dir, 'blobs', 'sha256'));
    }
    if (!target.root) return digest;
    await this.indexLock.run('index', async () => {
      const index = await this.readIndex();
      const desc: Descriptor = { mediaType, digest, size: bytes.length };
      if (target.tag !== undefined) {
        index.manifests = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== target.tag);
        index.manifests.push({ ...desc, annotations: { [REF_NAME]: target.tag } });
      } else if (!index.manifests.some((m) => m.digest === digest)) {
        index.manifests.push(desc);
      } else {
        return;
      }
      await writeFileAtomic(join(this.dir, 'index.json'), JSON.stringify(index), join(this.dir, TMP), this.dir);
    });
    return digest;
  }
}
