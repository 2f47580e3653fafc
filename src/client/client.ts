/**
 * `RegistryClient`: one registry, every operation of the OCI distribution API. Requests go through `send`,
 * which adds authentication (retrying once on 401 with fresh credentials), retries network errors, 5xx and
 * 429 with backoff when the body can be replayed, follows redirects of reads, and turns unexpected answers
 * into `RegistryError`. Blob transfer lives in `blobs.ts`.
 */
import type { Readable } from 'node:stream';
import { digestOf, tryParseDigest, type Digest } from '../spec/digest.ts';
import { MediaType } from '../spec/media-types.ts';
import { parseRepoName, isTag } from '../spec/names.ts';
import type { Descriptor } from '../spec/manifest.ts';
import { Authenticator, type AuthStats, type CredentialResolver, type Credentials } from './auth.ts';
import { defaultCredentials, staticCredentials } from './credentials.ts';
import { DigestMismatchError, NetworkError, RegistryError, type OciErrorEntry } from './errors.ts';
import { backoffDelay, isRetryableNetworkError, isRetryableStatus, parseRetryAfter, resolveRetry, sleep, type ResolvedRetry, type RetryOptions } from './retry.ts';
import { discard, readBody, Transport, type HttpResponse, type ProxyOptions, type TlsOptions } from './transport.ts';
import { blobOps, type BlobOps } from './blobs.ts';

export interface ClientOptions {
  /** The registry: `host[:port]` (HTTPS, or HTTP when `insecure`) or a URL `http(s)://host[:port]`. */
  registry: string;
  /** Talk plain HTTP to a `host[:port]` registry (a URL's scheme always wins). Default false. */
  insecure?: boolean;
  /**
   * Where credentials come from: fixed {@link Credentials}, a resolver, `'default'` (the Berth login store,
   * then docker's config.json; the default), or `'none'` (always anonymous).
   */
  credentials?: Credentials | CredentialResolver | 'default' | 'none';
  /** Ask the token server for a refresh token (what `login` does). */
  offlineToken?: boolean;
  retry?: RetryOptions;
  /** Abort a request when no byte moves for this long (default 60 s; 0 disables). */
  timeoutMs?: number;
  /** Most connections to the registry at once; more requests queue (default 16). */
  concurrency?: number;
  tls?: TlsOptions;
  /** Default `'env'`: HTTP_PROXY, HTTPS_PROXY, NO_PROXY. */
  proxy?: ProxyOptions;
  userAgent?: string;
  /** Blobs up to this size are uploaded in one PUT (default 16 MiB). */
  monolithicThreshold?: number;
  /** Size of each PATCH of a chunked upload (default 16 MiB; raised to the registry's `OCI-Chunk-Min-Length`). */
  chunkSize?: number;
  /** Share connections with other clients (then `tls`, `proxy` and `concurrency` are the transport's). */
  transport?: Transport;
}

/** The Accept list of manifest reads: OCI manifest and index, Docker schema2 manifest and list. */
export const MANIFEST_ACCEPT = [MediaType.OciManifest, MediaType.OciIndex, MediaType.DockerManifest, MediaType.DockerManifestList];

/** A body to send: bytes, a one-shot stream (never retried), or a factory that opens it again for a retry. */
export type RequestBody = Buffer | Readable | (() => Readable);

export interface SendOptions {
  method: string;
  /** A path under the registry (`/v2/...`) or an absolute URL (an upload location). */
  url: string | URL;
  query?: Record<string, string | string[] | undefined>;
  headers?: Record<string, string>;
  body?: RequestBody;
  /** Token scopes the request needs (`repository:a/b:pull`). */
  scopes: string[];
  /** Statuses handed back to the caller; any other status is a {@link RegistryError}. */
  ok: number[];
  signal?: AbortSignal;
  /** Retry on network errors and 5xx/429 (default true when the body is replayable). */
  retry?: boolean;
}

export interface ManifestResult {
  /** The digest of the bytes (verified against the reference when it is a digest, and against `Docker-Content-Digest`). */
  digest: Digest;
  /** `Content-Type` of the answer. */
  mediaType: string;
  /** The exact bytes, as stored by the registry. */
  bytes: Buffer;
  size: number;
}

export interface ManifestHead {
  digest: Digest | undefined;
  mediaType: string;
  size: number;
}

export interface PutManifestResult {
  digest: Digest;
  /** Whether the registry reported the subject (`OCI-Subject`); when not, the referrers tag was updated. */
  subjectProcessed?: boolean;
}

export interface ReferrersResult {
  manifests: Descriptor[];
  /** `api` when the registry has the referrers API, `tag-schema` when the `<alg>-<hex>` tag was read. */
  source: 'api' | 'tag-schema';
}

/** A reference is a digest or a tag; anything else is refused before a request is made. */
function checkRef(ref: string): void {
  if (!tryParseDigest(ref) && !isTag(ref)) throw new TypeError(`invalid reference ${JSON.stringify(ref.slice(0, 200))}: not a tag or digest`);
}

/** Parses `Link: <url>; rel="next"`. */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (m && /rel="?next"?/i.test(m[2]!)) return m[1];
  }
  return undefined;
}

export class RegistryClient {
  /** Base URL, e.g. `https://registry.example.com`. */
  readonly url: URL;
  /** `host[:port]`, the key credentials are looked up by. */
  readonly host: string;
  readonly transport: Transport;
  readonly retry: ResolvedRetry;
  readonly timeoutMs: number;
  readonly monolithicThreshold: number;
  readonly chunkSize: number;
  private readonly auth: Authenticator;
  private readonly ownsTransport: boolean;
  private readonly userAgent: string;
  private readonly blobs: BlobOps;
  private referrersApi: boolean | undefined;

  constructor(o: ClientOptions) {
    const r = o.registry.replace(/\/+$/, '');
    this.url = new URL(/^https?:\/\//i.test(r) ? r : `${o.insecure ? 'http' : 'https'}://${r}`);
    this.host = this.url.host;
    this.ownsTransport = !o.transport;
    this.transport = o.transport ?? new Transport({ ...(o.tls ? { tls: o.tls } : {}), ...(o.proxy !== undefined ? { proxy: o.proxy } : {}), ...(o.concurrency ? { maxSockets: o.concurrency } : {}) });
    this.retry = resolveRetry(o.retry);
    this.timeoutMs = o.timeoutMs ?? 60_000;
    this.monolithicThreshold = o.monolithicThreshold ?? 16 * 1024 * 1024;
    this.chunkSize = o.chunkSize ?? 16 * 1024 * 1024;
    this.userAgent = o.userAgent ?? 'berth-client/0.1';
    const c = o.credentials ?? 'default';
    const resolve: CredentialResolver = c === 'default' ? defaultCredentials() : c === 'none' ? staticCredentials(undefined) : typeof c === 'function' ? c : staticCredentials(c);
    this.auth = new Authenticator({ transport: this.transport, resolve, host: this.host, userAgent: this.userAgent, ...(o.offlineToken ? { offlineToken: true } : {}), timeoutMs: this.timeoutMs });
    this.blobs = blobOps(this);
  }

  /** Token requests made and cached tokens reused. */
  get authStats(): AuthStats {
    return this.auth.stats;
  }

  /** Closes idle connections (only when the client created its transport). */
  close(): void {
    if (this.ownsTransport) this.transport.close();
  }

  /**
   * Sends one request with authentication, retries and redirects (for GET/HEAD). Returns the response when its
   * status is in `ok` (the caller consumes its body); throws {@link RegistryError} or {@link NetworkError}.
   */
  async send(o: SendOptions): Promise<HttpResponse & { url: URL }> {
    let url = typeof o.url === 'string' && o.url.startsWith('/') ? new URL(o.url, this.url) : new URL(o.url);
    for (const [k, v] of Object.entries(o.query ?? {})) {
      if (v === undefined) continue;
      url.searchParams.delete(k);
      for (const x of Array.isArray(v) ? v : [v]) url.searchParams.append(k, x);
    }
    const oneShot = o.body !== undefined && !Buffer.isBuffer(o.body) && typeof o.body !== 'function';
    // A stream can be sent once: learn the auth scheme first, so a 401 does not consume it.
    if (oneShot && !this.auth.known) await this.ping();
    const mayRetry = o.retry !== false && !oneShot;
    let attempt = 0;
    let authRetried = false;
    let redirects = 0;
    let sendAuth = true;
    for (;;) {
      attempt++;
      const authz = sendAuth ? await this.auth.header(o.scopes) : undefined;
      const headers: Record<string, string> = { 'User-Agent': this.userAgent, ...o.headers };
      if (authz) headers.Authorization = authz;
      const body = typeof o.body === 'function' ? o.body() : o.body;
      if (Buffer.isBuffer(body)) headers['Content-Length'] = String(body.length);
      else if (body === undefined && (o.method === 'PUT' || o.method === 'POST' || o.method === 'PATCH')) headers['Content-Length'] = '0';
      let res: HttpResponse;
      try {
        res = await this.transport.request({ method: o.method, url, headers, ...(body !== undefined ? { body } : {}), ...(this.timeoutMs ? { timeoutMs: this.timeoutMs } : {}), ...(o.signal ? { signal: o.signal } : {}) });
      } catch (e) {
        if (typeof o.body === 'function' && body && !Buffer.isBuffer(body)) body.destroy();
        if (mayRetry && attempt < this.retry.attempts && isRetryableNetworkError(e)) {
          await sleep(backoffDelay(attempt, this.retry), o.signal);
          continue;
        }
        if (e instanceof Error && (e.name === 'AbortError' || e.name === 'TimeoutError')) throw e;
        throw new NetworkError(o.method, url.href, { cause: e });
      }
      const s = res.status;
      if (s === 401 && !authRetried && (!oneShot || !authz)) {
        authRetried = true;
        const again = await this.auth.unauthorized(res.header('www-authenticate'), o.scopes, authz);
        if (again && !oneShot) {
          await discard(res);
          attempt--;
          continue;
        }
      }
      if (s !== 401 && sendAuth) this.auth.markOpen();
      if ((o.method === 'GET' || o.method === 'HEAD') && [301, 302, 303, 307, 308].includes(s) && !o.ok.includes(s) && res.header('location') && redirects < 5) {
        await discard(res);
        const next = new URL(res.header('location')!, url);
        if (next.origin !== this.url.origin) sendAuth = false;
        url = next;
        redirects++;
        attempt--;
        continue;
      }
      if (o.ok.includes(s)) return Object.assign(res, { url });
      if (mayRetry && attempt < this.retry.attempts && isRetryableStatus(s)) {
        const after = parseRetryAfter(res.header('retry-after'));
        if (after === undefined || after <= this.retry.maxRetryAfterMs) {
          await discard(res);
          await sleep(after ?? backoffDelay(attempt, this.retry), o.signal);
          continue;
        }
      }
      throw await this.errorOf(o.method, url, res);
    }
  }

  /** Reads an error answer into a {@link RegistryError}. */
  async errorOf(method: string, url: URL, res: HttpResponse): Promise<RegistryError> {
    let text = '';
    let errors: OciErrorEntry[] = [];
    if (method !== 'HEAD') {
      try {
        text = (await readBody(res, 64 * 1024)).toString('utf8');
        const j = JSON.parse(text) as { errors?: OciErrorEntry[] };
        if (Array.isArray(j.errors)) errors = j.errors.filter((e) => e && typeof e.code === 'string').map((e) => ({ code: e.code, message: String(e.message ?? ''), ...(e.detail !== undefined ? { detail: e.detail } : {}) }));
      } catch {
        // not JSON: the text is kept for the message
      }
    } else await discard(res);
    const retryAfter = res.header('retry-after');
    return new RegistryError({ status: res.status, errors, method, url, bodyText: text, ...(retryAfter ? { retryAfter } : {}) });
  }

  /** `GET /v2/`: checks the registry speaks the API and that the credentials (if any) are accepted. */
  async ping(signal?: AbortSignal): Promise<void> {
    const res = await this.send({ method: 'GET', url: '/v2/', scopes: [], ok: [200], ...(signal ? { signal } : {}) });
    await discard(res);
  }

  /**
   * Checks the credentials and returns what a login store should keep: the refresh token when the token
   * server issued one (construct the client with `offlineToken: true`), else nothing (keep the password).
   */
  async login(signal?: AbortSignal): Promise<{ identityToken?: string }> {
    await this.ping(signal);
    const t = this.auth.refreshTokenFor();
    return t ? { identityToken: t } : {};
  }

  private async *paginate(path: string, key: 'repositories' | 'tags', scopes: string[], pageSize?: number, signal?: AbortSignal): AsyncGenerator<string> {
    let next: string | undefined = path;
    let query: Record<string, string | undefined> = { n: pageSize ? String(pageSize) : undefined };
    while (next) {
      const res = await this.send({ method: 'GET', url: next, query, scopes, ok: [200], ...(signal ? { signal } : {}) });
      const link = res.header('link');
      const j = JSON.parse((await readBody(res, 64 * 1024 * 1024)).toString('utf8')) as Record<string, unknown>;
      const items = j[key];
      if (Array.isArray(items)) for (const x of items) yield String(x);
      const l = nextLink(link);
      next = l ? new URL(l, res.url).href : undefined;
      query = {};
    }
  }

  /** Every repository name, following `Link` pagination (`pageSize` sets `n`). */
  catalog(o: { pageSize?: number; signal?: AbortSignal } = {}): AsyncGenerator<string> {
    return this.paginate('/v2/_catalog', 'repositories', ['registry:catalog:*'], o.pageSize, o.signal);
  }

  /** Every tag of `repo`, following `Link` pagination (`pageSize` sets `n`). */
  tags(repo: string, o: { pageSize?: number; signal?: AbortSignal } = {}): AsyncGenerator<string> {
    parseRepoName(repo);
    return this.paginate(`/v2/${repo}/tags/list`, 'tags', [`repository:${repo}:pull`], o.pageSize, o.signal);
  }

  /** Fetches a manifest with the four OCI/Docker types accepted; verifies its digest (see {@link ManifestResult}). */
  async getManifest(repo: string, ref: string, o: { accept?: string[]; signal?: AbortSignal } = {}): Promise<ManifestResult> {
    parseRepoName(repo);
    checkRef(ref);
    const res = await this.send({ method: 'GET', url: `/v2/${repo}/manifests/${ref}`, headers: { Accept: (o.accept ?? MANIFEST_ACCEPT).join(', ') }, scopes: [`repository:${repo}:pull`], ok: [200], ...(o.signal ? { signal: o.signal } : {}) });
    const bytes = await readBody(res, 4 * 1024 * 1024);
    const byDigest = tryParseDigest(ref);
    const announced = tryParseDigest(res.header('docker-content-digest') ?? '');
    const where = `GET ${res.url.href}`;
    const digest = digestOf(bytes, byDigest?.algorithm ?? announced?.algorithm ?? 'sha256');
    if (byDigest && digest !== byDigest.digest) throw new DigestMismatchError(byDigest.digest, digest, where);
    if (announced) {
      const a = digestOf(bytes, announced.algorithm);
      if (a !== announced.digest) throw new DigestMismatchError(announced.digest, a, where);
    }
    const ct = (res.header('content-type') ?? '').split(';')[0]!.trim();
    let mediaType = ct;
    if (!mediaType || mediaType === 'application/json') {
      try {
        mediaType = (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType ?? mediaType;
      } catch {
        // keep the header
      }
    }
    return { digest, mediaType, bytes, size: bytes.length };
  }

  /** HEAD of a manifest: its digest, type and size, or undefined when it does not exist. */
  async headManifest(repo: string, ref: string, o: { accept?: string[]; signal?: AbortSignal } = {}): Promise<ManifestHead | undefined> {
    parseRepoName(repo);
    checkRef(ref);
    const res = await this.send({ method: 'HEAD', url: `/v2/${repo}/manifests/${ref}`, headers: { Accept: (o.accept ?? MANIFEST_ACCEPT).join(', ') }, scopes: [`repository:${repo}:pull`], ok: [200, 404], ...(o.signal ? { signal: o.signal } : {}) });
    await discard(res);
    if (res.status === 404) return undefined;
    const d = tryParseDigest(res.header('docker-content-digest') ?? '');
    return { digest: d?.digest ?? (tryParseDigest(ref)?.digest as Digest | undefined), mediaType: (res.header('content-type') ?? '').split(';')[0]!.trim(), size: Number(res.header('content-length') ?? 0) };
  }

  /**
   * Stores a manifest under a tag or its digest, with `Content-Type` = its media type. A manifest with a
   * `subject` on a registry without the referrers API also updates the `<alg>-<hex>` referrers tag.
   */
  async putManifest(repo: string, ref: string, manifest: Buffer | object, o: { mediaType?: string; signal?: AbortSignal } = {}): Promise<PutManifestResult> {
    parseRepoName(repo);
    checkRef(ref);
    const bytes = Buffer.isBuffer(manifest) ? manifest : Buffer.from(JSON.stringify(manifest));
    let doc: { mediaType?: string; subject?: Descriptor; artifactType?: string; config?: { mediaType?: string }; manifests?: unknown; annotations?: Record<string, string> } = {};
    try {
      doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
    } catch {
      // the registry will refuse it with MANIFEST_INVALID
    }
    const mediaType = o.mediaType ?? doc.mediaType ?? (Array.isArray(doc.manifests) ? MediaType.OciIndex : MediaType.OciManifest);
    const res = await this.send({ method: 'PUT', url: `/v2/${repo}/manifests/${ref}`, headers: { 'Content-Type': mediaType }, body: bytes, scopes: [`repository:${repo}:pull,push`], ok: [201, 200, 202], ...(o.signal ? { signal: o.signal } : {}) });
    await discard(res);
    const digest = digestOf(bytes, tryParseDigest(ref)?.algorithm ?? 'sha256');
    const out: PutManifestResult = { digest };
    if (doc.subject && typeof doc.subject.digest === 'string') {
      out.subjectProcessed = res.header('oci-subject') !== undefined;
      if (!out.subjectProcessed) {
        const artifactType = doc.artifactType ?? doc.config?.mediaType;
        await this.addToReferrersTag(repo, doc.subject.digest, { mediaType, digest, size: bytes.length, ...(artifactType ? { artifactType } : {}), ...(doc.annotations ? { annotations: doc.annotations } : {}) }, o.signal);
      }
    }
    return out;
  }

  private async addToReferrersTag(repo: string, subject: string, desc: Descriptor, signal?: AbortSignal): Promise<void> {
    const tag = subject.replace(':', '-');
    let index: { schemaVersion: 2; mediaType: string; manifests: Descriptor[] } = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
    try {
      const cur = await this.getManifest(repo, tag, { accept: [MediaType.OciIndex], ...(signal ? { signal } : {}) });
      index = JSON.parse(cur.bytes.toString('utf8')) as typeof index;
    } catch (e) {
      if (!(e instanceof RegistryError && e.status === 404)) throw e;
    }
    if (index.manifests.some((m) => m.digest === desc.digest)) return;
    index.manifests.push(desc);
    await this.putManifest(repo, tag, Buffer.from(JSON.stringify(index)), { mediaType: MediaType.OciIndex, ...(signal ? { signal } : {}) });
  }

  /** Deletes a manifest by digest (every tag on it goes), or a tag alone where the registry supports it. */
  async deleteManifest(repo: string, ref: string, signal?: AbortSignal): Promise<void> {
    parseRepoName(repo);
    checkRef(ref);
    const res = await this.send({ method: 'DELETE', url: `/v2/${repo}/manifests/${ref}`, scopes: [`repository:${repo}:delete`], ok: [202, 200, 204], ...(signal ? { signal } : {}) });
    await discard(res);
  }

  /**
   * Manifests that refer to `digest` (their `subject`), filtered by `artifactType`: the referrers API, or on a
   * 404 from a registry without it the `<alg>-<hex>` tag schema.
   */
  async referrers(repo: string, digest: string, o: { artifactType?: string; signal?: AbortSignal } = {}): Promise<ReferrersResult> {
    parseRepoName(repo);
    const d = tryParseDigest(digest);
    if (!d) throw new TypeError(`invalid digest ${JSON.stringify(digest.slice(0, 200))}`);
    const filter = (m: Descriptor[]): Descriptor[] => (o.artifactType ? m.filter((x) => x.artifactType === o.artifactType) : m);
    if (this.referrersApi !== false) {
      const res = await this.send({ method: 'GET', url: `/v2/${repo}/referrers/${digest}`, query: { artifactType: o.artifactType }, headers: { Accept: MediaType.OciIndex }, scopes: [`repository:${repo}:pull`], ok: [200, 404], ...(o.signal ? { signal: o.signal } : {}) });
      const body = await readBody(res, 4 * 1024 * 1024);
      const ct = res.header('content-type') ?? '';
      if (res.status === 200 && ct.startsWith(MediaType.OciIndex)) {
        this.referrersApi = true;
        const j = JSON.parse(body.toString('utf8')) as { manifests?: Descriptor[] };
        return { manifests: filter(j.manifests ?? []), source: 'api' };
      }
      if (res.status === 200) throw await this.errorOf('GET', res.url, res);
      this.referrersApi = false;
    }
    try {
      const m = await this.getManifest(repo, `${d.algorithm}-${d.hex}`, { accept: [MediaType.OciIndex], ...(o.signal ? { signal: o.signal } : {}) });
      const j = JSON.parse(m.bytes.toString('utf8')) as { manifests?: Descriptor[] };
      return { manifests: filter(j.manifests ?? []), source: 'tag-schema' };
    } catch (e) {
      if (e instanceof RegistryError && e.status === 404) return { manifests: [], source: 'tag-schema' };
      throw e;
    }
  }

  // ---- blobs (blobs.ts) ----

  /** See {@link BlobOps.headBlob}. */
  headBlob: BlobOps['headBlob'] = (...a) => this.blobs.headBlob(...a);
  /** See {@link BlobOps.getBlob}. */
  getBlob: BlobOps['getBlob'] = (...a) => this.blobs.getBlob(...a);
  /** See {@link BlobOps.pushBlob}. */
  pushBlob: BlobOps['pushBlob'] = (...a) => this.blobs.pushBlob(...a);
  /** See {@link BlobOps.copyBlob}. */
  copyBlob: BlobOps['copyBlob'] = (...a) => this.blobs.copyBlob(...a);
  /** See {@link BlobOps.deleteBlob}. */
  deleteBlob: BlobOps['deleteBlob'] = (...a) => this.blobs.deleteBlob(...a);
  /** See {@link BlobOps.cancelUpload}. */
  cancelUpload: BlobOps['cancelUpload'] = (...a) => this.blobs.cancelUpload(...a);
  /** Cross-repository mount only (see {@link BlobOps.mountBlob}). */
  mountBlob: BlobOps['mountBlob'] = (...a) => this.blobs.mountBlob(...a);
}
