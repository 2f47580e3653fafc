/**
 * Pushes and pulls for the reliability suites, over {@link call}: monolithic and chunked blob uploads (with one
 * resume through the upload status after a failed chunk), manifests by tag, verified pulls. Every step says which
 * answers are legitimate under storage faults; what a push got acknowledged is returned for later checks.
 */
import { randomBytes } from 'node:crypto';
import { call, ok, sha256, type Tally } from './client.ts';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

export interface BlobData {
  data: Buffer;
  digest: string;
}

export function makeBlob(size: number): BlobData {
  const data = randomBytes(size);
  return { data, digest: sha256(data) };
}

export interface AckedImage {
  repo: string;
  tag: string;
  digest: string;
  manifest: Buffer;
  blobs: BlobData[];
}

export interface Env {
  base: string;
  tally: Tally;
  timeoutMs: number;
  /** Whether faults may be on (5xx and timeouts legitimate). */
  faulty: boolean;
  rand: () => number;
  /** Upload sessions whose chunk failed other than by a timeout, and whose status then showed unacknowledged bytes. */
  onResumeMismatch?: (detail: string) => void;
  /** Filled with each upload session's acknowledged size (by upload id) as its chunks are acknowledged. */
  acknowledged?: Map<string, number>;
}

const uploadId = (url: string): string => new URL(url, 'http://x').pathname.split('/').pop()!;

const opts = (e: Env) => ({ timeoutMs: e.timeoutMs, allow5xx: e.faulty });

/** POST ?digest= with the whole blob. True when acknowledged (201). */
export async function pushMonolithic(e: Env, repo: string, b: BlobData): Promise<boolean> {
  const o = await call(e.tally, 'blob.monolithic', `${e.base}/v2/${repo}/blobs/uploads/?digest=${b.digest}`, {
    ...opts(e),
    method: 'POST',
    body: b.data,
    headers: { 'Content-Type': 'application/octet-stream' },
    success: [201],
  });
  return ok(o, 201) && o.headers?.get('docker-content-digest') === b.digest;
}

function location(e: Env, h: Headers | undefined): string | undefined {
  const l = h?.get('location');
  if (!l) return undefined;
  return l.startsWith('http') ? l : `${e.base}${l}`;
}

/**
 * POST, PATCH chunks with Content-Range, PUT ?digest= (with the last chunk as its body half the time).
 * After a failed chunk the upload status is read once and the push resumes from its Range.
 */
export async function pushChunked(e: Env, repo: string, b: BlobData, chunks: number): Promise<boolean> {
  const start = await call(e.tally, 'blob.start', `${e.base}/v2/${repo}/blobs/uploads/`, { ...opts(e), method: 'POST', success: [202] });
  let url = location(e, start.headers);
  if (!ok(start, 202) || !url) return false;
  const size = b.data.length;
  const step = Math.ceil(size / chunks);
  const lastInPut = e.rand() < 0.5;
  let acked = 0;
  let timedOut = false;
  let resumed = false;
  const allow = (): string[] => (timedOut ? ['400 BLOB_UPLOAD_INVALID', '416 RANGE_INVALID'] : []);
  while (acked < size) {
    const end = Math.min(acked + step, size);
    if (lastInPut && end === size) break;
    const chunk = b.data.subarray(acked, end);
    const o = await call(e.tally, 'blob.patch', url, {
      ...opts(e),
      method: 'PATCH',
      body: chunk,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${acked}-${end - 1}`, 'Content-Length': String(chunk.length) },
      allow4xx: allow(),
      success: [202],
    });
    if (ok(o, 202)) {
      const range = o.headers?.get('range');
      if (range !== `0-${end - 1}`) e.tally.unexpected.push(`PATCH acknowledged Range ${range}, expected 0-${end - 1}`);
      url = location(e, o.headers) ?? url;
      acked = end;
      e.acknowledged?.set(uploadId(url), acked);
      continue;
    }
    if (o.timeout) timedOut = true;
    if (resumed || (o.status >= 400 && o.status < 500)) return false;
    resumed = true;
    const st = await call(e.tally, 'blob.status', url, { ...opts(e), method: 'GET', success: [204] });
    if (!ok(st, 204)) return false;
    const m = /^0-(\d+)$/.exec(st.headers?.get('range') ?? '');
    if (!m) {
      e.tally.unexpected.push(`upload status Range ${st.headers?.get('range')}`);
      return false;
    }
    const have = Number(m[1]) + (Number(m[1]) === 0 && acked === 0 ? 0 : 1);
    if (!timedOut && have !== acked) e.onResumeMismatch?.(`chunk failed with ${o.status} ${o.code ?? ''}; status shows ${have} bytes, ${acked} acknowledged`);
    if (have > size || (have < acked && !timedOut)) return false;
    acked = have;
    url = location(e, st.headers) ?? url;
  }
  const rest = b.data.subarray(acked);
  const withBody = rest.length > 0;
  const put = await call(e.tally, 'blob.complete', `${url}${url.includes('?') ? '&' : '?'}digest=${b.digest}`, {
    ...opts(e),
    method: 'PUT',
    ...(withBody ? { body: rest, headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${acked}-${size - 1}`, 'Content-Length': String(rest.length) } } : {}),
    allow4xx: allow(),
    success: [201],
  });
  return ok(put, 201) && put.headers?.get('docker-content-digest') === b.digest;
}

export function manifestFor(config: BlobData, layers: BlobData[], note: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.data.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.data.length })),
      annotations: { note },
    }),
  );
}

export async function putManifest(e: Env, repo: string, tag: string, body: Buffer): Promise<boolean> {
  const o = await call(e.tally, 'manifest.put', `${e.base}/v2/${repo}/manifests/${tag}`, {
    ...opts(e),
    method: 'PUT',
    body,
    headers: { 'Content-Type': OCI_MANIFEST },
    success: [201],
  });
  return ok(o, 201) && o.headers?.get('docker-content-digest') === sha256(body);
}

/**
 * Pulls an acknowledged image: manifest by tag (or digest), then each blob (GET, or HEAD), verifying bytes and
 * digests. Returns whether everything was read completely (false on a legitimate failure under faults).
 */
export async function pullImage(e: Env, img: AckedImage, byDigest = false, head = false): Promise<boolean> {
  const m = await call(e.tally, 'manifest.get', `${e.base}/v2/${img.repo}/manifests/${byDigest ? img.digest : img.tag}`, {
    ...opts(e),
    headers: { Accept: OCI_MANIFEST },
    success: [200],
  });
  if (!ok(m, 200)) return false;
  if (!m.body!.equals(img.manifest) || m.headers?.get('docker-content-digest') !== img.digest) {
    e.tally.unexpected.push(`manifest ${img.repo}:${img.tag} served different bytes or digest (${m.headers?.get('docker-content-digest')})`);
    return false;
  }
  let all = true;
  for (const b of img.blobs) {
    if (!(await pullBlob(e, img.repo, b, head))) all = false;
  }
  return all;
}

export async function pullBlob(e: Env, repo: string, b: BlobData, head = false): Promise<boolean> {
  const o = await call(e.tally, head ? 'blob.head' : 'blob.get', `${e.base}/v2/${repo}/blobs/${b.digest}`, { ...opts(e), method: head ? 'HEAD' : 'GET', mayTruncate: true, success: [200] });
  if (!ok(o, 200)) return false;
  if (head) {
    if (o.headers?.get('content-length') !== String(b.data.length)) e.tally.unexpected.push(`HEAD ${repo}@${b.digest}: Content-Length ${o.headers?.get('content-length')}`);
    return true;
  }
  if (o.body!.length !== b.data.length || sha256(o.body!) !== b.digest) {
    e.tally.unexpected.push(`blob ${repo}@${b.digest}: served ${o.body!.length} bytes hashing to ${sha256(o.body!)}`);
    return false;
  }
  return true;
}

/** Pushes config + layers (a mix of monolithic and chunked) + manifest. The acknowledged image, or undefined. */
export async function pushImage(e: Env, repo: string, tag: string, layers: BlobData[], onBlobAcked?: (b: BlobData) => void): Promise<AckedImage | undefined> {
  const config = makeBlob(200 + Math.floor(e.rand() * 800));
  let okAll = true;
  for (const b of [config, ...layers]) {
    const chunked = b.data.length > 64 * 1024 && e.rand() < 0.6;
    const acked = chunked ? await pushChunked(e, repo, b, 2 + Math.floor(e.rand() * 3)) : await pushMonolithic(e, repo, b);
    if (acked) onBlobAcked?.(b);
    else okAll = false;
  }
  if (!okAll) return undefined;
  const manifest = manifestFor(config, layers, `${repo}:${tag}`);
  if (!(await putManifest(e, repo, tag, manifest))) return undefined;
  return { repo, tag, digest: sha256(manifest), manifest, blobs: [config, ...layers] };
}
