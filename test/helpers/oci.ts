/** Tiny HTTP helpers for black-box tests: push blobs and manifests with fetch, make manifests. */
import { createHash } from 'node:crypto';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const EMPTY_CONFIG = 'application/vnd.oci.empty.v1+json';

export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export interface Blob {
  data: Buffer;
  digest: string;
  size: number;
}

export function blob(content: string | Buffer): Blob {
  const data = Buffer.isBuffer(content) ? content : Buffer.from(content);
  return { data, digest: sha256(data), size: data.length };
}

export async function req(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; body: Buffer; json: () => unknown }> {
  const r = await fetch(url, { redirect: 'manual', ...init });
  const body = Buffer.from(await r.arrayBuffer());
  return { status: r.status, headers: r.headers, body, json: () => JSON.parse(body.toString('utf8')) as unknown };
}

/** Monolithic push via POST ?digest=. */
export async function pushBlob(base: string, name: string, b: Blob): Promise<void> {
  const r = await req(`${base}/v2/${name}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: b.data, headers: { 'Content-Type': 'application/octet-stream' } });
  if (r.status !== 201) throw new Error(`push blob ${b.digest}: ${r.status} ${r.body.toString()}`);
}

export async function putManifest(base: string, name: string, ref: string, manifest: unknown, mediaType = OCI_MANIFEST): Promise<{ status: number; digest: string; headers: Headers; body: Buffer }> {
  const body = Buffer.from(JSON.stringify(manifest));
  const r = await req(`${base}/v2/${name}/manifests/${ref}`, { method: 'PUT', body, headers: { 'Content-Type': mediaType } });
  return { status: r.status, digest: sha256(body), headers: r.headers, body: r.body };
}

export function imageManifest(config: Blob, layers: Blob[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
    ...extra,
  };
}

/** Pushes a config + layers + manifest under `tag`; returns the manifest digest and bytes. */
export async function pushImage(base: string, name: string, tag: string, seed = tag): Promise<{ digest: string; body: Buffer; config: Blob; layer: Blob }> {
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const layer = blob(`layer-${seed}-${'x'.repeat(100)}`);
  await pushBlob(base, name, config);
  await pushBlob(base, name, layer);
  const m = imageManifest(config, [layer]);
  const r = await putManifest(base, name, tag, m);
  if (r.status !== 201) throw new Error(`push manifest: ${r.status} ${r.body.toString()}`);
  return { digest: r.digest, body: Buffer.from(JSON.stringify(m)), config, layer };
}

export function errorCode(body: Buffer): string | undefined {
  try {
    return (JSON.parse(body.toString()) as { errors?: Array<{ code: string }> }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}
