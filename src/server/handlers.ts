/**
 * Handlers: HTTP parsing and response headers only; the registry does the work.
 * Each receives a parsed, validated request context from the dispatcher.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { OciError, isOciError } from '../spec/errors.ts';
import { type Digest, parseDigest, tryParseDigest } from '../spec/digest.ts';
import { MAX_MANIFEST_SIZE } from '../spec/manifest.ts';
import { MediaType } from '../spec/media-types.ts';
import { memoize } from '../spec/memo.ts';
import { type RepoName, parseRepoName, parseTag } from '../spec/names.ts';
import type { Registry } from '../registry/registry.ts';
import { SMALL_BLOB } from '../registry/blobs.ts';
import type { ManifestRef } from '../registry/manifests.ts';
import { type Headers, hasBody, parseContentRange, parseN, parseRange, readBody, send, sendJson } from './http.ts';
import { packState, unpackState } from './upload-state.ts';

export interface HandlerEnv {
  registry: Registry;
  secret: string;
  prefix: string;
  host?: string;
  relativeurls: boolean;
  maxCatalogEntries: number;
  maxTags?: number;
}

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  env: HandlerEnv;
  log: Logger;
  query: URLSearchParams;
  name: RepoName;
  ref: string;
  signal: AbortSignal;
}

const BLOB_CACHE = 'max-age=31536000';

function baseUrl(c: Ctx): string {
  if (c.env.relativeurls) return c.env.prefix;
  return `${origin(c.req, c.env)}${c.env.prefix}`;
}

/** A URI host with an optional port: a registered name or IPv4 address, or an IPv6 literal. */
const HOST = /^(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * `scheme://host` the client used: `http.host`, else the forwarded or Host header. These headers are the
 * client's to write: a value that is not a scheme or a host is ignored, so a Location is always a valid URL.
 */
export function origin(req: IncomingMessage, env: Pick<HandlerEnv, 'host'>): string {
  if (env.host) return env.host;
  const first = (name: string): string | undefined => (req.headers[name] as string | undefined)?.split(',')[0]?.trim();
  const fproto = first('x-forwarded-proto')?.toLowerCase();
  const proto = fproto === 'http' || fproto === 'https' ? fproto : (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  const host = [first('x-forwarded-host'), req.headers.host].find((h) => h !== undefined && HOST.test(h)) ?? 'localhost';
  return `${proto}://${host}`;
}

/** A tag or digest reference (memoised: the result is shared and never modified). */
export const parseReference = memoize((ref: string): Readonly<ManifestRef> => (ref.includes(':') ? { digest: parseDigest(ref) } : { tag: parseTag(ref) }));

/** end-2 GET/HEAD /v2/<name>/blobs/<digest>, with single ranges. */
export async function getBlob(c: Ctx): Promise<void> {
  const { digest } = parseDigest(c.ref);
  const size = await c.env.registry.blobs.stat(c.name, digest);
  const headers: Headers = {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest,
    ETag: `"${digest}"`,
    'Accept-Ranges': 'bytes',
    'Cache-Control': BLOB_CACHE,
  };
  const inm = c.req.headers['if-none-match'];
  if (inm && (inm === `"${digest}"` || inm === digest)) {
    send(c.res, 304, headers);
    return;
  }
  // Storage that can serve the bytes itself (S3 presigned URLs) takes the transfer off this process.
  const url = await c.env.registry.blobs.redirectUrl(digest, c.req.method === 'HEAD' ? 'HEAD' : 'GET');
  if (url) {
    send(c.res, 307, { Location: url, 'Docker-Content-Digest': digest });
    return;
  }
  const range = size === 0 ? undefined : parseRange(c.req.headers.range, size);
  const status = range ? 206 : 200;
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  headers['Content-Length'] = end - start + 1;
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  if (c.req.method === 'HEAD' || size === 0) {
    c.res.writeHead(status, headers);
    c.res.end();
    return;
  }
  if (size <= SMALL_BLOB) {
    const data = await c.env.registry.blobs.readSmall(digest);
    c.res.writeHead(status, headers);
    c.res.end(range ? data.subarray(start, end + 1) : data);
    return;
  }
  // Headers are written once the file is open: a blob that vanished since the stat still gets a clean 404.
  await c.env.registry.blobs.send(digest, start, end, c.res, () => c.res.writeHead(status, headers), c.signal);
  c.res.end();
}

/** end-10 DELETE /v2/<name>/blobs/<digest>. */
export async function deleteBlob(c: Ctx): Promise<void> {
  const { digest } = parseDigest(c.ref);
  if (!c.env.registry.deleteEnabled) throw new OciError('UNSUPPORTED', { reason: 'deletes are disabled (storage.delete.enabled)' });
  await c.env.registry.blobs.delete(c.name, digest);
  send(c.res, 202, {});
}

function uploadHeaders(c: Ctx, id: string, size: number, startedAt: string): Headers {
  const state = packState(c.env.secret, { Name: c.name, UUID: id, Offset: size, StartedAt: startedAt });
  return {
    Location: `${baseUrl(c)}/v2/${c.name}/blobs/uploads/${id}?_state=${encodeURIComponent(state)}`,
    Range: `0-${Math.max(size - 1, 0)}`,
    'Docker-Upload-UUID': id,
  };
}

function blobCreated(c: Ctx, digest: Digest): void {
  send(c.res, 201, { Location: `${baseUrl(c)}/v2/${c.name}/blobs/${digest}`, 'Docker-Content-Digest': digest });
}

function contentLength(c: Ctx): number | undefined {
  const cl = c.req.headers['content-length'];
  return cl === undefined ? undefined : Number(cl);
}

/** end-4a/4b/11 POST /v2/<name>/blobs/uploads/ (start, monolithic with ?digest=, mount with ?mount=&from=). */
export async function startUpload(c: Ctx): Promise<void> {
  const { registry } = c.env;
  const mount = c.query.get('mount');
  const digestQ = c.query.get('digest');
  if (mount !== null) {
    const { digest } = parseDigest(mount);
    const fromQ = c.query.get('from');
    const from = fromQ === null ? undefined : parseRepoName(fromQ);
    c.req.resume();
    if ((await registry.blobs.mount(c.name, digest, from)) !== undefined) {
      blobCreated(c, digest);
      return;
    }
  } else if (digestQ !== null) {
    const expected = parseDigest(digestQ);
    const u = await registry.blobs.startUpload(c.name);
    const opts = { signal: c.signal, bodyGivenUp: true, ...(contentLength(c) !== undefined ? { length: contentLength(c) } : {}) };
    try {
      await registry.blobs.complete(c.name, u.id, expected, c.req, opts);
    } catch (e) {
      // The client never learned this session's id, so nobody can resume it: a monolithic upload that failed
      // (a short or aborted body, a wrong size) must not leave it behind. A digest mismatch already removed it.
      await registry.blobs.cancel(c.name, u.id).catch((err: unknown) => {
        if (!(isOciError(err) && err.code === 'BLOB_UPLOAD_UNKNOWN')) c.log.warn({ err, uuid: u.id }, 'could not remove a failed monolithic upload');
      });
      throw e;
    }
    blobCreated(c, expected.digest);
    return;
  }
  c.req.resume();
  const u = await registry.blobs.startUpload(c.name);
  send(c.res, 202, uploadHeaders(c, u.id, 0, u.startedAt));
}

function checkState(c: Ctx): void {
  const token = c.query.get('_state');
  if (token === null) return;
  const s = unpackState(c.env.secret, token);
  if (s.Name !== c.name || s.UUID !== c.ref) throw new OciError('BLOB_UPLOAD_INVALID', { reason: 'upload state token is for another upload' });
}

/** end-13 GET /v2/<name>/blobs/uploads/<id>: 204 with the Range received so far. */
export async function uploadStatus(c: Ctx): Promise<void> {
  checkState(c);
  const u = await c.env.registry.blobs.uploadStatus(c.name, c.ref);
  send(c.res, 204, uploadHeaders(c, u.id, u.size, u.startedAt));
}

/** end-5 PATCH /v2/<name>/blobs/uploads/<id>: append a chunk, in order only. */
export async function patchUpload(c: Ctx): Promise<void> {
  checkState(c);
  const range = parseContentRange(c.req.headers['content-range'] as string | undefined);
  const cl = contentLength(c);
  if (range && cl !== undefined && range.end - range.start + 1 !== cl) {
    throw new OciError('RANGE_INVALID', { reason: 'Content-Range does not match Content-Length' });
  }
  const length = range ? range.end - range.start + 1 : cl;
  const opts = { signal: c.signal, bodyGivenUp: true, ...(range ? { start: range.start } : {}), ...(length !== undefined ? { length } : {}) };
  const { size, startedAt } = await c.env.registry.blobs.append(c.name, c.ref, c.req, opts);
  send(c.res, 202, uploadHeaders(c, c.ref, size, startedAt));
}

/** end-6 PUT /v2/<name>/blobs/uploads/<id>?digest=: complete, with an optional final chunk. */
export async function putUpload(c: Ctx): Promise<void> {
  checkState(c);
  const digestQ = c.query.get('digest');
  if (digestQ === null) throw new OciError('DIGEST_INVALID', { reason: 'digest query parameter required' });
  const expected = parseDigest(digestQ);
  const withBody = hasBody(c.req);
  const range = withBody ? parseContentRange(c.req.headers['content-range'] as string | undefined) : undefined;
  const cl = contentLength(c);
  const opts = { signal: c.signal, bodyGivenUp: true, ...(range ? { start: range.start } : {}), ...(withBody && cl !== undefined ? { length: cl } : {}) };
  if (!withBody) c.req.resume();
  await c.env.registry.blobs.complete(c.name, c.ref, expected, withBody ? c.req : undefined, opts);
  blobCreated(c, expected.digest);
}

/** DELETE /v2/<name>/blobs/uploads/<id>: cancel. */
export async function cancelUpload(c: Ctx): Promise<void> {
  checkState(c);
  await c.env.registry.blobs.cancel(c.name, c.ref);
  send(c.res, 204, {});
}

/** end-3 GET/HEAD /v2/<name>/manifests/<reference>. */
export async function getManifest(c: Ctx): Promise<void> {
  const m = await c.env.registry.manifests.get(c.name, parseReference(c.ref));
  const headers: Headers = {
    'Content-Type': m.mediaType,
    'Docker-Content-Digest': m.digest,
    ETag: `"${m.digest}"`,
    'Content-Length': m.body.length,
  };
  const inm = c.req.headers['if-none-match'];
  if (inm && (inm === `"${m.digest}"` || inm === m.digest)) {
    c.res.writeHead(304, headers);
    c.res.end();
    return;
  }
  c.res.writeHead(200, headers);
  c.res.end(c.req.method === 'HEAD' ? undefined : m.body);
}

/** end-7 PUT /v2/<name>/manifests/<reference>. */
export async function putManifest(c: Ctx): Promise<void> {
  const ref = parseReference(c.ref);
  const body = await readBody(c.req, MAX_MANIFEST_SIZE, () => new OciError('MANIFEST_TOO_LARGE', { limit: MAX_MANIFEST_SIZE }));
  const r = await c.env.registry.manifests.put(c.name, ref, body, c.req.headers['content-type']);
  const headers: Headers = { Location: `${baseUrl(c)}/v2/${c.name}/manifests/${r.digest}`, 'Docker-Content-Digest': r.digest };
  if (r.subject) headers['OCI-Subject'] = r.subject;
  send(c.res, 201, headers);
}

/** end-9 DELETE /v2/<name>/manifests/<reference> (a digest deletes the manifest and its tags; a tag only the tag). */
export async function deleteManifest(c: Ctx): Promise<void> {
  const ref = parseReference(c.ref);
  if (!c.env.registry.deleteEnabled) throw new OciError('UNSUPPORTED', { reason: 'deletes are disabled (storage.delete.enabled)' });
  await c.env.registry.manifests.delete(c.name, ref);
  send(c.res, 202, {});
}

function linkHeader(path: string, params: Record<string, string>): string {
  return `<${path}?${new URLSearchParams(params).toString()}>; rel="next"`;
}

/** Serialised whole tag lists, by the registry's cached (immutable, replaced on change) sorted listing. */
const wholeTagLists = new WeakMap<readonly string[], { name: string; body: Buffer }>();

/** end-8a/8b GET /v2/<name>/tags/list[?n=&last=]. */
export async function listTags(c: Ctx): Promise<void> {
  let n = parseN(c.query.get('n'));
  const last = c.query.get('last') ?? undefined;
  if (c.env.maxTags !== undefined && (n === undefined || n > c.env.maxTags)) n = c.env.maxTags;
  const all = await c.env.registry.manifests.tags(c.name);
  // First tag after `last` (binary search: the list is sorted byte-wise).
  let start = 0;
  if (last !== undefined) {
    let hi = all.length;
    while (start < hi) {
      const mid = (start + hi) >>> 1;
      if (all[mid]! <= last) start = mid + 1;
      else hi = mid;
    }
  }
  if (n === undefined && start === 0) {
    // The whole list (what a client without n= gets): the same bytes while the listing is unchanged.
    let hit = wholeTagLists.get(all);
    if (hit?.name !== c.name) wholeTagLists.set(all, (hit = { name: c.name, body: Buffer.from(JSON.stringify({ name: c.name, tags: all })) }));
    const body = hit.body;
    c.res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length });
    c.res.end(c.req.method === 'HEAD' ? undefined : body);
    return;
  }
  const page = n === undefined ? all.slice(start) : all.slice(start, start + n);
  const headers: Headers = {};
  if (n !== undefined && n > 0 && start + n < all.length) {
    headers.Link = linkHeader(`${c.env.prefix}/v2/${c.name}/tags/list`, { n: String(n), last: page[page.length - 1]! });
  }
  sendJson(c.res, 200, { name: c.name, tags: page }, headers, c.req.method === 'HEAD');
}

/** GET /v2/_catalog[?n=&last=]. */
export async function catalog(c: Ctx): Promise<void> {
  const n = parseN(c.query.get('n')) ?? c.env.maxCatalogEntries;
  if (n > c.env.maxCatalogEntries) throw new OciError('PAGINATION_NUMBER_INVALID', { n, max: c.env.maxCatalogEntries });
  const last = c.query.get('last') ?? undefined;
  const page = await c.env.registry.catalog(n, last);
  const headers: Headers = {};
  if (page.more && page.repositories.length > 0) {
    headers.Link = linkHeader(`${c.env.prefix}/v2/_catalog`, { last: page.repositories[page.repositories.length - 1]!, n: String(n) });
  }
  sendJson(c.res, 200, { repositories: page.repositories }, headers, c.req.method === 'HEAD');
}

const REFERRERS_PAGE = 1000;

/** end-12a/12b GET /v2/<name>/referrers/<digest>[?artifactType=]. Never 404 for an unknown subject. */
export async function referrers(c: Ctx): Promise<void> {
  const { digest } = parseDigest(c.ref);
  const artifactType = c.query.get('artifactType') ?? undefined;
  const n = Math.min(parseN(c.query.get('n')) ?? REFERRERS_PAGE, REFERRERS_PAGE);
  const last = c.query.get('last');
  const all = await c.env.registry.manifests.referrers(c.name, digest, artifactType);
  const from = last && tryParseDigest(last) ? all.findIndex((d) => d.digest > last) : 0;
  const start = from < 0 ? all.length : from;
  const page = all.slice(start, start + n);
  const headers: Headers = { 'Content-Type': MediaType.OciIndex };
  if (artifactType !== undefined) headers['OCI-Filters-Applied'] = 'artifactType';
  if (start + n < all.length) {
    const params: Record<string, string> = { n: String(n), last: page[page.length - 1]!.digest };
    if (artifactType !== undefined) params.artifactType = artifactType;
    headers.Link = linkHeader(`${c.env.prefix}/v2/${c.name}/referrers/${digest}`, params);
  }
  sendJson(c.res, 200, { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: page }, headers, c.req.method === 'HEAD');
}

