/**
 * A light HTTP client for the benchmark (it shares the CPUs with the servers): node:http with a keep-alive
 * agent per server, bodies streamed from {@link PatternBlob}s, responses optionally discarded while counted.
 */
import { Agent, request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import type { PatternBlob, SmallBlob } from './data.ts';

export interface HttpResult {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body, unless it was discarded. */
  body: Buffer;
  /** Bytes of body received. */
  bytes: number;
}

export interface RequestOptions {
  headers?: OutgoingHttpHeaders;
  /** A small in-memory body, or a range of a pattern blob streamed with backpressure. */
  body?: Buffer | { blob: PatternBlob; start?: number; end?: number };
  /** Count the response bytes without keeping them. */
  discard?: boolean;
  /** Statuses that are success; anything else throws with the response body. */
  expect?: readonly number[];
}

export class HttpError extends Error {
  constructor(
    readonly method: string,
    readonly url: string,
    readonly status: number,
    readonly body: string,
  ) {
    super(`${method} ${url} -> ${status}: ${body.slice(0, 300)}`);
    this.name = 'HttpError';
  }
}

/** Requests sent and not yet answered in full, printed when the harness is stopped early (where it hung). */
const inflight = new Set<{ method: string; url: string; started: number }>();
process.once('exit', (code) => {
  if (code === 0 || inflight.size === 0) return;
  const now = Date.now();
  const lines = [...inflight].map((r) => `  ${r.method} ${r.url} (${((now - r.started) / 1000).toFixed(1)} s)`);
  process.stderr.write(`bench: ${inflight.size} request(s) in flight at exit:\n${lines.slice(0, 20).join('\n')}\n`);
});

/**
 * A request that sees no bytes move for this long fails (rather than waiting for ever): the slowest step
 * of a healthy run (a 1 GiB PUT's final fsync on a busy disk) stays far below it.
 */
export const STALL_TIMEOUT_MS = 60_000;

export class Client {
  readonly base: string;
  readonly agent: Agent;

  constructor(base: string, maxSockets = 256) {
    this.base = base;
    this.agent = new Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' });
  }

  url(pathOrUrl: string): string {
    return new URL(pathOrUrl, this.base).toString();
  }

  request(method: string, pathOrUrl: string, opts: RequestOptions = {}): Promise<HttpResult> {
    const url = this.url(pathOrUrl);
    const headers: OutgoingHttpHeaders = { ...opts.headers };
    const body = opts.body;
    if (Buffer.isBuffer(body)) headers['content-length'] = body.length;
    else if (body) headers['content-length'] = (body.end ?? body.blob.size) - (body.start ?? 0);
    else if (method === 'PUT' || method === 'POST' || method === 'PATCH') headers['content-length'] = 0;
    return new Promise<HttpResult>((resolve, reject) => {
      const req = httpRequest(url, { method, headers, agent: this.agent });
      const entry = { method, url, started: Date.now() };
      inflight.add(entry);
      let settled = false;
      const fail = (e: unknown): void => {
        if (settled) return;
        settled = true;
        inflight.delete(entry);
        req.destroy();
        reject(e instanceof Error ? e : new Error(String(e)));
      };
      req.once('error', fail);
      req.setTimeout(STALL_TIMEOUT_MS, () => fail(new Error(`${method} ${url}: nothing moved for ${STALL_TIMEOUT_MS / 1000} s`)));
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          if (!opts.discard) chunks.push(c);
        });
        res.once('error', fail);
        res.once('end', () => {
          if (settled) return;
          settled = true;
          inflight.delete(entry);
          const status = res.statusCode ?? 0;
          const buf = opts.discard ? Buffer.alloc(0) : Buffer.concat(chunks, bytes);
          const expect = opts.expect;
          if (expect && !expect.includes(status)) {
            reject(new HttpError(method, url, status, opts.discard ? `(${bytes} bytes discarded)` : buf.toString('utf8')));
            return;
          }
          resolve({ status, headers: res.headers, body: buf, bytes });
        });
      });
      if (Buffer.isBuffer(body) || !body) {
        req.end(body);
      } else {
        body.blob.writeTo(req, body.start, body.end).then(
          () => req.end(),
          (e: unknown) => fail(e),
        );
      }
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

const ACCEPT_MANIFESTS = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');
export const ACCEPT_HEADER = ACCEPT_MANIFESTS;

function withQuery(location: string, key: string, value: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}${key}=${encodeURIComponent(value)}`;
}

function location(r: HttpResult, what: string): string {
  const loc = r.headers.location;
  if (!loc) throw new Error(`${what}: no Location header (status ${r.status})`);
  return loc;
}

/** The registry operations the scenarios use, over one keep-alive {@link Client}. */
export class RegistryClient {
  constructor(readonly http: Client) {}

  async startUpload(name: string): Promise<string> {
    const r = await this.http.request('POST', `/v2/${name}/blobs/uploads/`, { expect: [202] });
    return location(r, 'POST upload');
  }

  /** POST, then PUT ?digest= with the whole body (what most clients call a monolithic upload). */
  async pushMonolithic(name: string, blob: PatternBlob | SmallBlob): Promise<void> {
    const loc = await this.startUpload(name);
    const body = 'data' in blob ? blob.data : { blob };
    await this.http.request('PUT', withQuery(loc, 'digest', blob.digest), {
      headers: { 'content-type': 'application/octet-stream' },
      body,
      expect: [201],
    });
  }

  /** POST, PATCH chunks with Content-Range following each Location, then PUT ?digest= without a body. */
  async pushChunked(name: string, blob: PatternBlob, chunkSize: number): Promise<number> {
    let loc = await this.startUpload(name);
    let requests = 1;
    for (let start = 0; start < blob.size; start += chunkSize) {
      const end = Math.min(blob.size, start + chunkSize);
      const r = await this.http.request('PATCH', loc, {
        headers: { 'content-type': 'application/octet-stream', 'content-range': `${start}-${end - 1}` },
        body: { blob, start, end },
        expect: [202],
      });
      loc = location(r, 'PATCH upload');
      requests++;
    }
    await this.http.request('PUT', withQuery(loc, 'digest', blob.digest), { expect: [201] });
    return requests + 1;
  }

  async mount(name: string, digest: string, from: string): Promise<void> {
    const r = await this.http.request('POST', `/v2/${name}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`, { expect: [201, 202] });
    if (r.status === 202) throw new Error(`mount ${digest} from ${from} into ${name} was not honoured (202)`);
  }

  async putManifest(name: string, ref: string, body: Buffer, mediaType: string): Promise<void> {
    await this.http.request('PUT', `/v2/${name}/manifests/${ref}`, { headers: { 'content-type': mediaType }, body, expect: [201] });
  }

  async getManifest(name: string, ref: string): Promise<HttpResult> {
    return this.http.request('GET', `/v2/${name}/manifests/${ref}`, { headers: { accept: ACCEPT_MANIFESTS }, expect: [200] });
  }

  /** Follows `Link: <…>; rel="next"` from `path` to the end; returns every item of `key` and the page count. */
  /** Follows `Link` from `path`; `fetchSeconds` is the time spent waiting for responses (request to last byte). */
  async paginate(path: string, key: 'repositories' | 'tags'): Promise<{ items: string[]; pages: number; fetchSeconds: number }> {
    const items: string[] = [];
    let next: string | undefined = path;
    let pages = 0;
    let fetchSeconds = 0;
    while (next !== undefined) {
      const t0 = process.hrtime.bigint();
      const r = await this.http.request('GET', next, { expect: [200] });
      fetchSeconds += Number(process.hrtime.bigint() - t0) / 1e9;
      pages++;
      const doc = JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
      const list = doc[key];
      if (list !== null && list !== undefined) {
        if (!Array.isArray(list)) throw new Error(`GET ${next}: "${key}" is not a list`);
        for (const x of list) items.push(String(x));
      }
      next = nextLink(r.headers.link);
      if (pages > 1_000_000) throw new Error('pagination does not end');
    }
    return { items, pages, fetchSeconds };
  }
}

/** The target of `rel="next"` in a Link header, if any. */
export function nextLink(header: string | string[] | undefined): string | undefined {
  const h = Array.isArray(header) ? header.join(', ') : header;
  if (!h) return undefined;
  for (const part of h.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (m && /rel="?next"?/.test(m[2]!)) return m[1];
  }
  return undefined;
}
