/**
 * Deterministic builders of OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/…`) for
 * end-to-end tests with real clients (`skopeo copy oci:DIR:TAG docker://…`). Everything is made in process:
 * a minimal ustar writer, gzip through node:zlib (its header carries no mtime or name), generated file
 * contents from a seed. The same inputs give the same bytes, so every digest a test expects is known up front.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export const MT = {
  ociLayout: 'application/vnd.oci.layout.header.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** The `Accept` list pulls send: every manifest type a test pushes. */
export const ACCEPT_ALL = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList].join(', ');

export type Format = 'oci' | 'docker';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** `n` pseudo-random bytes derived from `seed` (SHA-256 in counter mode): incompressible and reproducible. */
export function generateBytes(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let off = 0, i = 0; off < n; i++) {
    const block = createHash('sha256').update(`${seed}:${i}`).digest();
    off += block.copy(out, off, 0, Math.min(block.length, n - off));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// tar

export interface TarEntry {
  /** Relative path without a leading `/`; directories are added automatically. */
  path: string;
  data: Buffer;
  mode?: number;
}

function octal(n: number, width: number): string {
  // width includes the trailing NUL
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function tarHeader(name: string, size: number, mode: number, type: '0' | '5'): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar path too long for this writer: ${name}`);
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(0, 12), 136, 'ascii'); // mtime = epoch
  h.write('        ', 148, 'ascii'); // checksum placeholder
  h.write(type, 156, 'ascii');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii'); // uname
  h.write('root', 297, 'ascii'); // gname
  h.write(octal(0, 8), 329, 'ascii'); // devmajor
  h.write(octal(0, 8), 337, 'ascii'); // devminor
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

/** A POSIX ustar archive of `entries` (sorted by path, parents first, mtime 0, owner 0:0). */
export function tar(entries: TarEntry[]): Buffer {
  const dirs = new Set<string>();
  for (const e of entries) {
    const parts = e.path.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/') + '/');
  }
  const all: Array<{ name: string; data?: Buffer; mode: number }> = [
    ...[...dirs].map((d) => ({ name: d, mode: 0o755 })),
    ...entries.map((e) => ({ name: e.path, data: e.data, mode: e.mode ?? 0o644 })),
  ].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const chunks: Buffer[] = [];
  for (const e of all) {
    const size = e.data?.length ?? 0;
    chunks.push(tarHeader(e.name, size, e.mode, e.data ? '0' : '5'));
    if (e.data) {
      chunks.push(e.data);
      if (size % 512) chunks.push(Buffer.alloc(512 - (size % 512)));
    }
  }
  chunks.push(Buffer.alloc(1024));
  return Buffer.concat(chunks);
}

// ---------------------------------------------------------------------------------------------------------
// layout

/** An OCI image layout directory being filled: blobs are written as they are added, `index.json` on `write()`. */
export class OciLayout {
  readonly refs: Descriptor[] = [];

  constructor(readonly dir: string) {
    mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  }

  addBlob(data: Buffer, mediaType: string): Descriptor {
    const digest = sha256(data);
    const p = join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
    if (!existsSync(p)) writeFileSync(p, data);
    return { mediaType, digest, size: data.length };
  }

  addJson(value: unknown, mediaType: string): { desc: Descriptor; bytes: Buffer } {
    const bytes = Buffer.from(JSON.stringify(value));
    return { desc: this.addBlob(bytes, mediaType), bytes };
  }

  /** Names `desc` in `index.json` (annotation `org.opencontainers.image.ref.name`). */
  tag(tag: string, desc: Descriptor): void {
    this.refs.push({ mediaType: desc.mediaType, digest: desc.digest, size: desc.size, ...(desc.platform ? { platform: desc.platform } : {}), annotations: { 'org.opencontainers.image.ref.name': tag } });
    this.write();
  }

  write(): void {
    writeFileSync(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(join(this.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: this.refs }));
  }

  blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  }

  /** The `oci:` reference skopeo takes. */
  ref(tag: string): string {
    return `oci:${this.dir}:${tag}`;
  }
}

/** The manifest digest an `oci:` layout directory names under `tag` in its `index.json`. */
export function layoutDigest(dir: string, tag?: string): string {
  const idx = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const m = tag === undefined ? idx.manifests : idx.manifests.filter((d) => d.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (m.length !== 1) throw new Error(`${dir}: expected one manifest${tag ? ` tagged ${tag}` : ''}, found ${m.length}`);
  return m[0]!.digest;
}

// ---------------------------------------------------------------------------------------------------------
// images

export interface FileSpec {
  path: string;
  size: number;
}

export interface ImageOptions {
  format?: Format;
  /** Number of layers (each with one generated file of `layerSize` bytes) or explicit file lists per layer. */
  layers?: number | FileSpec[][];
  /** Bytes in each generated file when `layers` is a number (default 4 KiB). */
  layerSize?: number;
  architecture?: string;
  variant?: string;
  os?: string;
  /** Makes the content unique; defaults to `format/architecture`. */
  seed?: string;
}

export interface BuiltLayer {
  desc: Descriptor;
  /** sha256 of the uncompressed tar. */
  diffId: string;
}

export interface BuiltImage {
  kind: 'image';
  format: Format;
  mediaType: string;
  /** The manifest's descriptor (digest = sha256 of `manifest`). */
  desc: Descriptor;
  digest: string;
  manifest: Buffer;
  config: Descriptor;
  configJson: ImageConfig;
  layers: BuiltLayer[];
  platform: Platform;
}

export interface ImageConfig {
  created: string;
  architecture: string;
  os: string;
  variant?: string;
  config: { Env: string[]; Cmd: string[]; Labels: Record<string, string> };
  rootfs: { type: 'layers'; diff_ids: string[] };
  history: Array<{ created: string; created_by: string }>;
}

export function addImage(layout: OciLayout, opts: ImageOptions = {}): BuiltImage {
  const format = opts.format ?? 'oci';
  const architecture = opts.architecture ?? 'amd64';
  const os = opts.os ?? 'linux';
  const seed = opts.seed ?? `${format}/${architecture}`;
  const size = opts.layerSize ?? 4096;
  const specs: FileSpec[][] =
    typeof opts.layers === 'object' ? opts.layers : Array.from({ length: opts.layers ?? 2 }, (_, i) => [{ path: `data/layer${i}/file.bin`, size }]);
  const layerType = format === 'oci' ? MT.ociLayerGzip : MT.dockerLayerGzip;
  const layers = specs.map((files, i) => {
    const raw = tar(files.map((f) => ({ path: f.path, data: generateBytes(`${seed}/${i}/${f.path}`, f.size) })));
    return { desc: layout.addBlob(gzipSync(raw, { level: 6 }), layerType), diffId: sha256(raw) };
  });
  const platform: Platform = { architecture, os, ...(opts.variant ? { variant: opts.variant } : {}) };
  const configJson: ImageConfig = {
    created: '1970-01-01T00:00:00Z',
    architecture,
    os,
    ...(opts.variant ? { variant: opts.variant } : {}),
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/true'], Labels: { 'berth.test.seed': seed } },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created: '1970-01-01T00:00:00Z', created_by: `generated layer ${i}` })),
  };
  const config = layout.addJson(configJson, format === 'oci' ? MT.ociConfig : MT.dockerConfig).desc;
  const mediaType = format === 'oci' ? MT.ociManifest : MT.dockerManifest;
  const { desc, bytes } = layout.addJson(
    {
      schemaVersion: 2,
      mediaType,
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: layers.map((l) => l.desc),
    },
    mediaType,
  );
  return { kind: 'image', format, mediaType, desc: { ...desc, platform }, digest: desc.digest, manifest: bytes, config, configJson, layers, platform };
}

export interface BuiltIndex {
  kind: 'index';
  format: Format;
  mediaType: string;
  desc: Descriptor;
  digest: string;
  manifest: Buffer;
  images: BuiltImage[];
}

/** An image index (OCI) or manifest list (Docker) over one image per platform, each entry with `platform`. */
export function addIndex(layout: OciLayout, opts: { format?: Format; platforms?: Platform[]; layers?: number; layerSize?: number; seed?: string } = {}): BuiltIndex {
  const format = opts.format ?? 'oci';
  const platforms = opts.platforms ?? [
    { architecture: 'amd64', os: 'linux' },
    { architecture: 'arm64', os: 'linux', variant: 'v8' },
  ];
  const images = platforms.map((p) =>
    addImage(layout, { format, architecture: p.architecture, os: p.os, variant: p.variant, layers: opts.layers ?? 2, layerSize: opts.layerSize, seed: `${opts.seed ?? 'index'}/${format}/${p.architecture}` }),
  );
  const mediaType = format === 'oci' ? MT.ociIndex : MT.dockerList;
  const { desc, bytes } = layout.addJson(
    { schemaVersion: 2, mediaType, manifests: images.map((i) => ({ mediaType: i.mediaType, digest: i.digest, size: i.desc.size, platform: i.platform })) },
    mediaType,
  );
  return { kind: 'index', format, mediaType, desc, digest: desc.digest, manifest: bytes, images };
}

export interface BuiltArtifact {
  kind: 'artifact';
  mediaType: string;
  artifactType: string;
  desc: Descriptor;
  digest: string;
  manifest: Buffer;
  config: Descriptor;
  layers: Descriptor[];
  subject: Descriptor;
  annotations: Record<string, string>;
}

export const EMPTY_JSON = Buffer.from('{}');

/**
 * An OCI 1.1 artifact: an image manifest with `artifactType`, the empty config (`{}`) and a `subject`.
 * Only the artifact's own blobs go into `layout`; the subject is referenced, not copied.
 */
export function addArtifact(layout: OciLayout, opts: { subject: Descriptor; artifactType: string; payload?: Buffer; annotations?: Record<string, string> }): BuiltArtifact {
  const config = layout.addBlob(EMPTY_JSON, MT.ociEmpty);
  const payload = opts.payload ?? Buffer.from(JSON.stringify({ artifact: opts.artifactType, subject: opts.subject.digest }));
  const layers = [layout.addBlob(payload, opts.artifactType)];
  const annotations = opts.annotations ?? { 'org.opencontainers.image.created': '1970-01-01T00:00:00Z' };
  const subject: Descriptor = { mediaType: opts.subject.mediaType, digest: opts.subject.digest, size: opts.subject.size };
  const { desc, bytes } = layout.addJson(
    { schemaVersion: 2, mediaType: MT.ociManifest, artifactType: opts.artifactType, config, layers, subject, annotations },
    MT.ociManifest,
  );
  return { kind: 'artifact', mediaType: MT.ociManifest, artifactType: opts.artifactType, desc, digest: desc.digest, manifest: bytes, config, layers, subject, annotations };
}

// ---------------------------------------------------------------------------------------------------------
// skopeo `dir:` transport

export type Built = BuiltImage | BuiltIndex | BuiltArtifact;

/**
 * Writes `m` and everything it references, from `layout`, as a skopeo `dir:` directory (`version`,
 * `manifest.json`, `<hex>.manifest.json` for list instances, blobs named by hex digest). skopeo 1.9 reads only
 * OCI media types from `oci:` layouts, so Docker schema2 images and manifest lists travel through `dir:`.
 * Returns the `dir:` reference.
 */
export function writeDirTransport(layout: OciLayout, m: Built, target: string): string {
  mkdirSync(target, { recursive: true });
  writeFileSync(join(target, 'version'), 'Directory Transport Version: 1.1\n');
  writeFileSync(join(target, 'manifest.json'), m.manifest);
  const copy = (digest: string): void => writeFileSync(join(target, digest.slice('sha256:'.length)), readFileSync(layout.blobPath(digest)));
  if (m.kind === 'index') {
    for (const i of m.images) writeFileSync(join(target, `${i.digest.slice('sha256:'.length)}.manifest.json`), i.manifest);
  }
  for (const d of blobDigests(m).layers) copy(d);
  return `dir:${target}`;
}

/** The manifest digest of a skopeo `dir:` directory (sha256 of its `manifest.json`). */
export function dirTransportDigest(dir: string): string {
  return sha256(readFileSync(join(dir, 'manifest.json')));
}

// ---------------------------------------------------------------------------------------------------------
// one-call builders: a fresh layout directory with one tagged manifest, plus the reference skopeo copies from

export interface BuiltSource<T extends Built> {
  layout: OciLayout;
  built: T;
  /** What `skopeo copy` reads: `oci:<dir>:<tag>`, or `dir:<dir>.dir` for Docker media types. */
  src: string;
}

function source<T extends Built>(layout: OciLayout, built: T, tag: string): BuiltSource<T> {
  layout.tag(tag, built.desc);
  const docker = built.mediaType === MT.dockerManifest || built.mediaType === MT.dockerList;
  return { layout, built, src: docker ? writeDirTransport(layout, built, `${layout.dir}.dir`) : layout.ref(tag) };
}

/** A single-platform image (OCI by default, `format: 'docker'` for schema2). */
export function buildImage(dir: string, tag: string, opts: ImageOptions = {}): BuiltSource<BuiltImage> {
  const layout = new OciLayout(dir);
  return source(layout, addImage(layout, opts), tag);
}

export function buildDockerImage(dir: string, tag: string, opts: Omit<ImageOptions, 'format'> = {}): BuiltSource<BuiltImage> {
  return buildImage(dir, tag, { ...opts, format: 'docker' });
}

/** An OCI image index (or, with `format: 'docker'`, a manifest list) over amd64 + arm64/v8 by default. */
export function buildMultiArch(dir: string, tag: string, opts: Parameters<typeof addIndex>[1] = {}): BuiltSource<BuiltIndex> {
  const layout = new OciLayout(dir);
  return source(layout, addIndex(layout, opts), tag);
}

export function buildArtifact(dir: string, tag: string, opts: Parameters<typeof addArtifact>[1]): BuiltSource<BuiltArtifact> {
  const layout = new OciLayout(dir);
  return source(layout, addArtifact(layout, opts), tag);
}

/** Every blob digest (config, layers, child manifests) reachable from a built manifest, manifest itself excluded. */
export function blobDigests(m: Built): { layers: string[]; manifests: string[] } {
  if (m.kind === 'image') return { layers: [m.config.digest, ...m.layers.map((l) => l.desc.digest)], manifests: [] };
  if (m.kind === 'artifact') return { layers: [m.config.digest, ...m.layers.map((l) => l.digest)], manifests: [] };
  const layers: string[] = [];
  for (const i of m.images) layers.push(...blobDigests(i).layers);
  return { layers, manifests: m.images.map((i) => i.digest) };
}
