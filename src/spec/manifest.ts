/**
 * Manifest parsing and validation: pure functions over bytes, no I/O.
 * Returns what the registry must check exists (blobs, child manifests, subject).
 */
import { OciError } from './errors.ts';
import { type Digest, tryParseDigest } from './digest.ts';
import { IMAGE_MANIFEST_TYPES, INDEX_TYPES, MediaType, isNonDistributable } from './media-types.ts';

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: unknown;
}

export interface ParsedManifest {
  /** The media type the manifest declares (or that its shape implies, for OCI bodies without one). */
  mediaType: string;
  /** Blobs that must be linked in the repository (config and distributable layers). */
  blobs: Descriptor[];
  /** Child manifests that must exist in the repository (indexes only). */
  manifests: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  configMediaType?: string;
  annotations?: Record<string, string>;
}

/** The most bytes a manifest may have (distribution's limit). */
export const MAX_MANIFEST_SIZE = 4 * 1024 * 1024;
const MAX_DEPTH = 64;

function invalid(reason: string): OciError {
  return new OciError('MANIFEST_INVALID', { reason });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkDepth(v: unknown, depth: number): void {
  if (depth > MAX_DEPTH) throw invalid(`JSON nested deeper than ${MAX_DEPTH} levels`);
  if (Array.isArray(v)) for (const x of v) checkDepth(x, depth + 1);
  else if (isObject(v)) for (const k in v) checkDepth(v[k], depth + 1);
}

function stringMap(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v)) throw invalid(`${where} must be an object of strings`);
  for (const k in v) if (typeof v[k] !== 'string') throw invalid(`${where}.${k} must be a string`);
  return v as Record<string, string>;
}

export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalid(`${where} must be a descriptor object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== 'string' || mediaType.length === 0 || mediaType.length > 255) throw invalid(`${where}.mediaType must be a non-empty string`);
  if (typeof digest !== 'string' || !tryParseDigest(digest)) throw invalid(`${where}.digest is not a valid digest`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid(`${where}.size must be a non-negative integer`);
  const d: Descriptor = { mediaType, digest: digest as Digest, size };
  if (v.artifactType !== undefined) {
    if (typeof v.artifactType !== 'string') throw invalid(`${where}.artifactType must be a string`);
    d.artifactType = v.artifactType;
  }
  const annotations = stringMap(v.annotations, `${where}.annotations`);
  if (annotations) d.annotations = annotations;
  if (v.urls !== undefined) {
    if (!Array.isArray(v.urls) || v.urls.some((u) => typeof u !== 'string')) throw invalid(`${where}.urls must be an array of strings`);
    d.urls = v.urls as string[];
  }
  if (v.platform !== undefined) d.platform = v.platform;
  return d;
}

function descriptorList(v: unknown, where: string): Descriptor[] {
  if (!Array.isArray(v)) throw invalid(`${where} must be an array`);
  return v.map((x, i) => parseDescriptor(x, `${where}[${i}]`));
}

/**
 * Parses and validates manifest bytes.
 * @param contentType the request's Content-Type (may be empty); must agree with the body's `mediaType`.
 */
export function parseManifest(body: Uint8Array, contentType: string | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  } catch (e) {
    throw invalid(`body is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(doc)) throw invalid('manifest must be a JSON object');
  checkDepth(doc, 0);
  const ct = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  let mediaType = doc.mediaType;
  if (mediaType !== undefined && typeof mediaType !== 'string') throw invalid('mediaType must be a string');
  if (doc.schemaVersion === 1 || ct === MediaType.DockerSchema1 || ct === MediaType.DockerSchema1Signed) {
    throw invalid('Docker schema 1 manifests are not supported');
  }
  if (doc.schemaVersion !== 2) throw invalid('schemaVersion must be 2');
  if (mediaType === undefined) {
    // OCI manifests may omit mediaType; the Content-Type or the shape tells what they are.
    if (ct === MediaType.OciManifest || ct === MediaType.OciIndex) mediaType = ct;
    else mediaType = Array.isArray(doc.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
  }
  const declared = mediaType as string;
  const isGenericCt = ct === '' || ct === 'application/json' || ct === 'application/octet-stream';
  if (!isGenericCt && ct !== declared) {
    throw invalid(`Content-Type ${ct} does not match the manifest's mediaType ${declared}`);
  }
  const out: ParsedManifest = { mediaType: declared, blobs: [], manifests: [] };
  const annotations = stringMap(doc.annotations, 'annotations');
  if (annotations) out.annotations = annotations;
  if (doc.subject !== undefined) out.subject = parseDescriptor(doc.subject, 'subject');
  if (doc.artifactType !== undefined) {
    if (typeof doc.artifactType !== 'string') throw invalid('artifactType must be a string');
    out.artifactType = doc.artifactType;
  }
  if (IMAGE_MANIFEST_TYPES.has(declared)) {
    const config = parseDescriptor(doc.config, 'config');
    out.configMediaType = config.mediaType;
    out.blobs.push(config);
    const layers = doc.layers === undefined && declared === MediaType.OciManifest ? [] : descriptorList(doc.layers, 'layers');
    for (const l of layers) {
      if (isNonDistributable(l.mediaType) && l.urls && l.urls.length > 0) continue;
      out.blobs.push(l);
    }
    if (declared === MediaType.DockerManifest && out.subject) throw invalid('Docker manifests cannot have a subject');
  } else if (INDEX_TYPES.has(declared)) {
    out.manifests = descriptorList(doc.manifests, 'manifests');
  } else {
    throw invalid(`unsupported manifest media type ${declared}`);
  }
  return out;
}
