/**
 * `docker save`-style tarballs (`docker-archive:FILE[:REF]`): `manifest.json` (`[{Config, RepoTags, Layers}]`),
 * the config at `<hex>.json`, each layer as a file the manifest names (`<hex>.tar`, or `<id>/layer.tar` in
 * archives of older Docker versions, often symlinks; `blobs/sha256/<hex>` in Docker 25+).
 *
 * Reading scans the tarball once with tar-stream, hashing every file while it streams past and remembering where
 * its data starts; blobs are then read straight from the file at that offset (`createReadStream` with
 * `start`/`end`), so nothing is ever held in memory but the small JSON files. Each image becomes an OCI image
 * manifest (or, with `format: 'docker'`, a Docker v2 schema2 one) whose layer descriptors are the stored files
 * as they are: gzip- or zstd-compressed files keep their compressed digest, plain tars are `.tar` layers (as
 * skopeo writes them, named by their diff id). Config and layer digests therefore survive a round trip
 * layout -> archive -> layout; the manifest digest is the synthesised one.
 *
 * Writing produces one tarball from image manifests (OCI or Docker v2, one platform each): blobs are appended as
 * they arrive (one entry at a time; the copy engine's parallel puts queue up), config as `<hex>.json`, layers
 * stored as they are in the source as `<hex>.tar` (compressed or not; `docker load` and skopeo decompress what
 * they read), then `manifest.json` on `commit()`. The archive is written to a temporary file beside FILE and
 * renamed into place only by `commit()`, so an interrupted copy never leaves a truncated FILE. No legacy
 * `repositories` file or `<id>/json` directories are written: Docker since 1.10 and skopeo read `manifest.json`,
 * and a `repositories` file must point at those legacy directories.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open as openFile, rename, unlink } from 'node:fs/promises';
import { dirname, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract, pack, type Pack } from 'tar-stream';
import { type Digest, digestOf, isDigest, parseDigest, newHash } from '../spec/digest.ts';
import { OciError } from '../spec/errors.ts';
import { IMAGE_MANIFEST_TYPES, MediaType } from '../spec/media-types.ts';
import { parseManifest } from '../spec/manifest.ts';
import { HashTap, fsyncDir, tempName } from './files.ts';
import type { BlobDesc, BlobOpener, BlobRead, ImageDestination, ImageSource, ManifestData, ManifestTarget, PutBlobOptions } from './transport.ts';

const MAX_JSON = 8 * 1024 * 1024;
const CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

/**
 * Splits what follows `docker-archive:` as skopeo does: at the first `:` into FILE and an optional reference,
 * either `name[:tag]` (for reading, the image with that RepoTag; for writing, its RepoTag) or `@N` (the N-th
 * image of `manifest.json`, reading only).
 */
export function parseDockerArchiveReference(s: string): { file: string; ref?: string } {
  const i = s.indexOf(':');
  const file = i < 0 ? s : s.slice(0, i);
  const ref = i < 0 ? '' : s.slice(i + 1);
  if (file === '') throw new Error(`docker-archive:${s}: missing file`);
  if (ref === '') return { file };
  if (!ref.startsWith('@') && isDigest(ref)) throw new Error(`docker-archive:${s}: a digest cannot name an archive image`);
  return { file, ref };
}

/** `name[:tag]` with `:latest` added when there is no tag, and Docker Hub's defaults removed for comparison. */
export function normalizeRepoTag(ref: string): string {
  const slash = ref.lastIndexOf('/');
  const withTag = ref.indexOf(':', slash + 1) < 0 ? `${ref}:latest` : ref;
  return withTag.replace(/^(?:docker\.io|index\.docker\.io)\//, '').replace(/^library\//, '');
}

interface TarFile {
  name: string;
  type: 'file' | 'link' | 'symlink';
  linkname?: string;
  /** Where the data starts in the tarball. */
  offset: number;
  size: number;
  digest?: Digest;
  head?: Buffer;
  json?: Buffer;
}

interface ArchiveImage {
  repoTags: string[];
  manifest: ManifestData;
}

function layerMediaType(head: Buffer | undefined, format: 'oci' | 'docker'): string {
  const gzip = head !== undefined && head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
  const zstd = head !== undefined && head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528;
  if (format === 'docker') {
    if (zstd) throw new Error('zstd layers cannot be described in a Docker v2 manifest; read with format oci');
    return gzip ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.docker.image.rootfs.diff.tar';
  }
  return gzip ? 'application/vnd.oci.image.layer.v1.tar+gzip' : zstd ? 'application/vnd.oci.image.layer.v1.tar+zstd' : 'application/vnd.oci.image.layer.v1.tar';
}

/** A docker-save tarball as a copy source. */
export class DockerArchiveReader implements ImageSource {
  readonly name: string;
  private scanned?: Promise<{ images: ArchiveImage[]; blobs: Map<string, TarFile> }>;

  constructor(
    readonly file: string,
    private readonly opts: { format?: 'oci' | 'docker' } = {},
  ) {
    this.name = `docker-archive:${file}`;
  }

  /** One pass over the tarball: every regular file is hashed, small JSON files are kept. */
  private async scanFiles(): Promise<Map<string, TarFile>> {
    const files = new Map<string, TarFile>();
    const ex = extract();
    const src = createReadStream(this.file);
    src.on('error', (e) => ex.destroy(e));
    src.pipe(ex as unknown as NodeJS.WritableStream);
    for await (const entry of ex) {
      const h = entry.header;
      const name = posix.normalize(h.name).replace(/^\.\//, '').replace(/\/$/, '');
      const offset = (h as { byteOffset?: number }).byteOffset;
      if (h.type === 'symlink' || h.type === 'link') {
        files.set(name, { name, type: h.type, linkname: h.linkname, offset: 0, size: 0 });
      } else if (h.type === 'file' || h.type === 'contiguous-file') {
        if (offset === undefined) throw new Error(`${this.name}: tar reader gave no data offset`);
        const hash = createHash('sha256');
        const keep = (name === 'manifest.json' || name === 'repositories' || name.endsWith('.json')) && h.size <= MAX_JSON;
        const chunks: Buffer[] = [];
        let head: Buffer | undefined;
        for await (const c of entry) {
          const chunk = c as Buffer;
          hash.update(chunk);
          if (!head) head = Buffer.from(chunk.subarray(0, 4));
          if (keep) chunks.push(chunk);
        }
        files.set(name, { name, type: 'file', offset, size: h.size, digest: `sha256:${hash.digest('hex')}` as Digest, head, json: keep ? Buffer.concat(chunks) : undefined });
        continue;
      }
      entry.resume();
    }
    return files;
  }

  private resolve(files: Map<string, TarFile>, path: string): TarFile {
    let name = posix.normalize(path).replace(/^\.\//, '');
    for (let hops = 0; hops < 16; hops++) {
      const f = files.get(name);
      if (!f) throw new Error(`${this.name}: ${path} is not in the archive`);
      if (f.type === 'file') return f;
      name = f.type === 'symlink' ? posix.normalize(posix.join(posix.dirname(name), f.linkname!)) : posix.normalize(f.linkname!);
    }
    throw new Error(`${this.name}: too many links resolving ${path}`);
  }

  private scan(): Promise<{ images: ArchiveImage[]; blobs: Map<string, TarFile> }> {
    this.scanned ??= (async () => {
      const files = await this.scanFiles();
      const mf = files.get('manifest.json')?.json;
      if (!mf) throw new Error(`${this.name}: no manifest.json (not a docker save archive)`);
      const entries = JSON.parse(mf.toString('utf8')) as Array<{ Config?: string; RepoTags?: string[] | null; Layers?: string[] }>;
      if (!Array.isArray(entries)) throw new Error(`${this.name}: manifest.json is not an array`);
      const format = this.opts.format ?? 'oci';
      const blobs = new Map<string, TarFile>();
      const images = entries.map((e, i) => {
        if (typeof e.Config !== 'string' || !Array.isArray(e.Layers)) throw new Error(`${this.name}: manifest.json entry ${i} lacks Config or Layers`);
        const config = this.resolve(files, e.Config);
        if (!config.json) throw new Error(`${this.name}: config ${e.Config} is too large`);
        blobs.set(config.digest!, config);
        const layers = e.Layers.map((l) => {
          const f = this.resolve(files, l);
          blobs.set(f.digest!, f);
          return { mediaType: layerMediaType(f.head, format), digest: f.digest!, size: f.size };
        });
        const mediaType = format === 'oci' ? MediaType.OciManifest : MediaType.DockerManifest;
        const configType = format === 'oci' ? 'application/vnd.oci.image.config.v1+json' : 'application/vnd.docker.container.image.v1+json';
        const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config: { mediaType: configType, digest: config.digest, size: config.size }, layers }));
        return { repoTags: e.RepoTags ?? [], manifest: { bytes, mediaType, digest: digestOf(bytes) } };
      });
      return { images, blobs };
    })();
    return this.scanned;
  }

  async getManifest(ref: string | undefined): Promise<ManifestData> {
    const { images } = await this.scan();
    if (ref === undefined) {
      if (images.length !== 1) throw new Error(`${this.name}: ${images.length} images in the archive, name one with :REF or :@N`);
      return images[0]!.manifest;
    }
    if (ref.startsWith('@')) {
      const n = Number(ref.slice(1));
      const img = Number.isInteger(n) ? images[n] : undefined;
      if (!img) throw new OciError('MANIFEST_UNKNOWN', `${this.name}: no image ${ref}`);
      return img.manifest;
    }
    if (isDigest(ref)) {
      const img = images.find((i) => i.manifest.digest === ref);
      if (!img) throw new OciError('MANIFEST_UNKNOWN', `${this.name}: ${ref}`);
      return img.manifest;
    }
    const want = normalizeRepoTag(ref);
    const img = images.find((i) => i.repoTags.some((t) => normalizeRepoTag(t) === want));
    if (!img) throw new OciError('MANIFEST_UNKNOWN', `${this.name}: no image tagged ${ref}`);
    return img.manifest;
  }

  async openBlob(desc: BlobDesc, offset = 0): Promise<BlobRead> {
    const { blobs } = await this.scan();
    const f = blobs.get(desc.digest);
    if (!f) throw new OciError('BLOB_UNKNOWN', `${this.name}: ${desc.digest}`);
    if (offset > f.size) throw new OciError('RANGE_INVALID', `${this.name}: offset ${offset} past the end of ${desc.digest}`);
    const stream = offset === f.size ? Readable.from([]) : createReadStream(this.file, { start: f.offset + offset, end: f.offset + f.size - 1 });
    return { stream, size: f.size };
  }

  async listTags(): Promise<string[]> {
    const { images } = await this.scan();
    return images.flatMap((i) => i.repoTags);
  }
}

/** A docker-save tarball being written; see the module comment. Call `commit()` to put FILE in place. */
export class DockerArchiveWriter implements ImageDestination {
  readonly name: string;
  readonly supportsIndex = false;
  private tar?: { pack: Pack; done: Promise<void>; tmp: string };
  private queue: Promise<unknown> = Promise.resolve();
  private failed?: Error;
  private readonly written = new Map<string, { name: string; size: number }>();
  private readonly images: Array<{ Config: string; RepoTags: string[]; Layers: string[] }> = [];

  constructor(readonly file: string) {
    this.name = `docker-archive:${file}`;
  }

  private start(): { pack: Pack; done: Promise<void>; tmp: string } {
    if (!this.tar) {
      const p = pack();
      const tmp = tempName(dirname(this.file), '.docker-archive-');
      const done = pipeline(p as unknown as NodeJS.ReadableStream, createWriteStream(tmp, { mode: 0o644 }));
      done.catch(() => undefined);
      this.tar = { pack: p, done, tmp };
    }
    return this.tar;
  }

  /** Runs `fn` after every earlier entry was written; a failed entry breaks the archive for good. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.failed) throw this.failed;
      try {
        return await fn();
      } catch (e) {
        this.failed = e as Error;
        throw e;
      }
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  async hasBlob(digest: Digest): Promise<number | undefined> {
    return this.written.get(digest)?.size;
  }

  private entry(name: string, size: number): { sink: ReturnType<Pack['entry']>; finished: Promise<void> } {
    const { pack: p } = this.start();
    let sink!: ReturnType<Pack['entry']>;
    const finished = new Promise<void>((ok, fail) => {
      sink = p.entry({ name, size, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0, type: 'file' }, (err) => (err ? fail(err) : ok()));
    });
    // Failures surface through `finished` and the archive's pipeline, not as unhandled events.
    sink.on('error', () => undefined);
    finished.catch(() => undefined);
    return { sink, finished };
  }

  putBlob(desc: BlobDesc, open: BlobOpener, opts: PutBlobOptions = {}): Promise<void> {
    return this.serial(async () => {
      if (this.written.has(desc.digest)) {
        opts.onProgress?.(desc.size);
        return;
      }
      const { algorithm, hex } = parseDigest(desc.digest);
      const name = CONFIG_TYPES.has(desc.mediaType) ? `${hex}.json` : `${hex}.tar`;
      const hash = newHash(algorithm);
      const src = await open(0);
      const tap = new HashTap(hash, (n) => opts.onProgress?.(n), desc.size, () => new OciError('SIZE_INVALID', `${desc.digest}: more than ${desc.size} bytes`));
      const { sink, finished } = this.entry(name, desc.size);
      try {
        // The tar entry is a streamx Writable: write with backpressure by hand.
        await pipeline(
          src,
          tap,
          async (chunks: AsyncIterable<Buffer>) => {
            for await (const c of chunks) {
              if (!sink.write(c)) await new Promise<void>((ok) => sink.once('drain', () => ok()));
            }
          },
          { signal: opts.signal },
        );
      } catch (e) {
        sink.destroy(e as Error);
        throw e;
      }
      if (tap.bytes !== desc.size) throw new OciError('SIZE_INVALID', `${desc.digest}: got ${tap.bytes} bytes, expected ${desc.size}`);
      const got = `${algorithm}:${hash.digest('hex')}`;
      if (got !== desc.digest) throw new OciError('DIGEST_INVALID', `${desc.digest}: content hashes to ${got}`);
      sink.end(null);
      await finished;
      this.written.set(desc.digest, { name, size: desc.size });
    });
  }

  async putManifest(target: ManifestTarget, bytes: Buffer, mediaType: string): Promise<Digest> {
    const parsed = parseManifest(bytes, mediaType);
    if (!IMAGE_MANIFEST_TYPES.has(parsed.mediaType)) throw new OciError('UNSUPPORTED', `${this.name}: a docker archive holds single-platform images, not ${parsed.mediaType} (select a platform)`);
    const doc = JSON.parse(bytes.toString('utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
    const nameOf = (d: string): string => {
      const w = this.written.get(d);
      if (!w) throw new OciError('MANIFEST_BLOB_UNKNOWN', `${this.name}: ${d} was not written`);
      return w.name;
    };
    const repoTags: string[] = [];
    if (target.tag !== undefined) {
      const t = target.tag.includes(':', target.tag.lastIndexOf('/') + 1) ? target.tag : `${target.tag}:latest`;
      for (const img of this.images) img.RepoTags = img.RepoTags.filter((x) => normalizeRepoTag(x) !== normalizeRepoTag(t));
      repoTags.push(t);
    }
    this.images.push({ Config: nameOf(doc.config.digest), RepoTags: repoTags, Layers: doc.layers.map((l) => nameOf(l.digest)) });
    return digestOf(bytes);
  }

  async commit(): Promise<void> {
    await this.serial(async () => {
      const json = Buffer.from(JSON.stringify(this.images));
      const { sink, finished } = this.entry('manifest.json', json.length);
      sink.end(json);
      await finished;
    });
    const { pack: p, done, tmp } = this.start();
    p.finalize();
    await done;
    const fh = await openFile(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.file);
    await fsyncDir(dirname(this.file));
    this.tar = undefined;
  }

  async abort(): Promise<void> {
    const t = this.tar;
    this.tar = undefined;
    if (!t) return;
    t.pack.destroy();
    await t.done.catch(() => undefined);
    await unlink(t.tmp).catch(() => undefined);
  }
}
