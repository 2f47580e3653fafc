/**
 * `berth inspect`: what an image reference points at, as a stable object (`--json`) or a short report.
 * An index lists its manifests with their platforms; an image gives its config (digest, platform, created),
 * its layers with sizes, annotations and the total size a pull transfers.
 */
import { buffer } from 'node:stream/consumers';
import type { RegistryClient } from '../client/client.ts';
import type { Descriptor } from '../spec/manifest.ts';
import { formatBytes } from './output.ts';
import { formatRef, type ImageRef } from './reference.ts';

/** One blob of an image: config or layer. */
export interface InspectBlob {
  digest: string;
  mediaType: string;
  size: number;
  annotations?: Record<string, string>;
}

/** One entry of an index. */
export interface InspectEntry extends InspectBlob {
  /** `os/architecture[/variant]`, when the entry has a platform. */
  platform?: string;
  artifactType?: string;
  /** Manifest, config and layers of this entry (undefined when the child manifest could not be read). */
  totalSize?: number;
}

interface InspectCommon {
  /** `registry/repo[:tag][@digest]` as resolved (Docker Hub names get `library/`). */
  reference: string;
  digest: string;
  mediaType: string;
  /** Size of the manifest itself. */
  size: number;
  artifactType?: string;
  annotations: Record<string, string>;
  subject?: InspectBlob;
  /**
   * Bytes a pull transfers: the manifest, and for an image its config and layers; for an index its own bytes and
   * every child's total, a blob shared by several children counted once.
   */
  totalSize: number;
}

export interface InspectIndex extends InspectCommon {
  kind: 'index';
  manifests: InspectEntry[];
}

export interface InspectImage extends InspectCommon {
  kind: 'image';
  /** `os/architecture[/variant]` from the config, when it is an image config. */
  platform?: string;
  /** `created` of the config, when it has one. */
  created?: string;
  config: InspectBlob;
  layers: InspectBlob[];
}

export type InspectResult = InspectIndex | InspectImage;

interface ManifestDoc {
  mediaType?: string;
  artifactType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

function platformString(p: unknown): string | undefined {
  if (!p || typeof p !== 'object') return undefined;
  const { os, architecture, variant } = p as { os?: unknown; architecture?: unknown; variant?: unknown };
  if (typeof os !== 'string' || typeof architecture !== 'string') return undefined;
  return `${os}/${architecture}${typeof variant === 'string' && variant ? `/${variant}` : ''}`;
}

function blob(d: Descriptor): InspectBlob {
  return { digest: d.digest, mediaType: d.mediaType, size: d.size, ...(d.annotations && Object.keys(d.annotations).length > 0 ? { annotations: d.annotations } : {}) };
}

/** The blobs (config and layers) of an image manifest, by digest. */
function blobsOf(doc: ManifestDoc): Map<string, number> {
  const m = new Map<string, number>();
  if (doc.config) m.set(doc.config.digest, doc.config.size);
  for (const l of doc.layers ?? []) m.set(l.digest, l.size);
  return m;
}

function sum(m: Map<string, number>): number {
  let n = 0;
  for (const v of m.values()) n += v;
  return n;
}

/** Reads what `ref` names and describes it (one manifest request, plus the config or the children's manifests). */
export async function inspect(client: RegistryClient, ref: ImageRef): Promise<InspectResult> {
  const m = await client.getManifest(ref.repo, ref.ref);
  const doc = JSON.parse(m.bytes.toString('utf8')) as ManifestDoc;
  const common: InspectCommon = {
    reference: formatRef(ref),
    digest: m.digest,
    mediaType: m.mediaType,
    size: m.size,
    ...(doc.artifactType ? { artifactType: doc.artifactType } : {}),
    annotations: doc.annotations ?? {},
    ...(doc.subject ? { subject: blob(doc.subject) } : {}),
    totalSize: m.size,
  };
  if (Array.isArray(doc.manifests)) {
    const shared = new Map<string, number>();
    const manifests = await Promise.all(
      doc.manifests.map(async (d): Promise<InspectEntry> => {
        const platform = platformString(d.platform);
        const e: InspectEntry = { ...blob(d), ...(platform ? { platform } : {}), ...(d.artifactType ? { artifactType: d.artifactType } : {}) };
        try {
          const child = await client.getManifest(ref.repo, d.digest);
          const blobs = blobsOf(JSON.parse(child.bytes.toString('utf8')) as ManifestDoc);
          for (const [k, v] of blobs) shared.set(k, v);
          shared.set(d.digest, child.size);
          e.totalSize = child.size + sum(blobs);
        } catch {
          // a sparse index (a platform not copied): the entry is listed without its size
        }
        return e;
      }),
    );
    return { kind: 'index', ...common, totalSize: m.size + sum(shared), manifests };
  }
  if (!doc.config) throw new Error(`${formatRef(ref)}: ${m.mediaType} manifest without a config`);
  const out: InspectImage = { kind: 'image', ...common, config: blob(doc.config), layers: (doc.layers ?? []).map(blob), totalSize: m.size + sum(blobsOf(doc)) };
  if (IMAGE_CONFIG_TYPES.has(doc.config.mediaType) && doc.config.size <= 4 * 1024 * 1024) {
    const dl = await client.getBlob(ref.repo, doc.config.digest, { size: doc.config.size });
    const cfg = JSON.parse((await buffer(dl.stream)).toString('utf8')) as { os?: string; architecture?: string; variant?: string; created?: string };
    const platform = platformString(cfg);
    if (platform) out.platform = platform;
    if (typeof cfg.created === 'string') out.created = cfg.created;
  }
  return out;
}

function table(rows: string[][], indent = '  '): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
}

/** The human report of {@link inspect}. */
export function formatInspect(r: InspectResult): string {
  const lines = [`Reference:   ${r.reference}`, `Digest:      ${r.digest}`, `Media type:  ${r.mediaType}`];
  if (r.artifactType) lines.push(`Artifact:    ${r.artifactType}`);
  if (r.subject) lines.push(`Subject:     ${r.subject.digest}`);
  if (r.kind === 'index') {
    lines.push(`Manifests:   ${r.manifests.length}`);
    lines.push(...table(r.manifests.map((e) => [e.platform ?? e.artifactType ?? '-', e.digest, e.totalSize === undefined ? '?' : formatBytes(e.totalSize)])));
  } else {
    if (r.platform) lines.push(`Platform:    ${r.platform}`);
    if (r.created) lines.push(`Created:     ${r.created}`);
    lines.push(`Config:      ${r.config.digest} (${formatBytes(r.config.size)}, ${r.config.mediaType})`);
    lines.push(`Layers:      ${r.layers.length}`);
    lines.push(...table(r.layers.map((l) => [l.digest, formatBytes(l.size), l.mediaType])));
  }
  const ann = Object.entries(r.annotations);
  if (ann.length > 0) {
    lines.push('Annotations:');
    for (const [k, v] of ann) lines.push(`  ${k}=${v}`);
  }
  lines.push(`Total size:  ${formatBytes(r.totalSize)}`);
  return lines.join('\n');
}
