/**
 * HTTP for the client: `node:http`/`node:https` with keep-alive agents (a fraction of global fetch's CPU cost
 * per request, see docs/client.md), streaming bodies with backpressure, an inactivity timeout, and proxies
 * from HTTP_PROXY / HTTPS_PROXY / NO_PROXY (plain HTTP through the proxy in absolute form, HTTPS through a
 * CONNECT tunnel).
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ClientRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest, type AgentOptions as HttpsAgentOptions } from 'node:https';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import type { Duplex, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TimeoutError } from './errors.ts';

/** TLS options for HTTPS registries. */
export interface TlsOptions {
  /** Extra trusted CA certificates (PEM). */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Client certificate and key (PEM) for registries that require mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Verify the server certificate (default true). Turning this off is for tests only. */
  rejectUnauthorized?: boolean;
}

/** Proxy settings: `'env'` (default) reads HTTP_PROXY, HTTPS_PROXY and NO_PROXY (either case); `false` disables. */
export type ProxyOptions = 'env' | false | { http?: string; https?: string; noProxy?: string };

export interface TransportOptions {
  tls?: TlsOptions;
  /** The most connections per host at once (requests beyond it queue). Default 16. */
  maxSockets?: number;
  proxy?: ProxyOptions;
  /** Environment to read proxies from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

export interface HttpRequest {
  method: string;
  url: URL;
  headers: Record<string, string>;
  /** A buffer, or a stream piped with backpressure (then `Content-Length` should be set by the caller). */
  body?: Buffer | Readable;
  /** Abort when no byte moves for this long (ms). 0 or undefined: no inactivity limit. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body; the caller must consume or {@link discard} it. */
  body: IncomingMessage;
  /** A header's value (first one when repeated), lowercase name. */
  header(name: string): string | undefined;
}

/** Reads and drops a response body so its connection can be reused. */
export function discard(res: HttpResponse): Promise<void> {
  return new Promise((ok) => {
    if (res.body.readableEnded || res.body.destroyed) return ok();
    res.body.on('end', ok).on('error', () => ok()).on('close', ok).resume();
  });
}

/** Reads a whole (small) response body, refusing more than `limit` bytes. */
export async function readBody(res: HttpResponse, limit = 4 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > limit) {
      res.body.destroy();
      throw new Error(`response body larger than ${limit} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

interface ProxyConfig {
  http?: URL;
  https?: URL;
  noProxy: string[];
}

function readProxy(p: ProxyOptions | undefined, env: NodeJS.ProcessEnv): ProxyConfig {
  if (p === false) return { noProxy: [] };
  const o = p === undefined || p === 'env' ? { http: env.HTTP_PROXY ?? env.http_proxy, https: env.HTTPS_PROXY ?? env.https_proxy, noProxy: env.NO_PROXY ?? env.no_proxy } : p;
  const parse = (s: string | undefined): URL | undefined => {
    if (!s) return undefined;
    try {
      return new URL(s.includes('://') ? s : `http://${s}`);
    } catch {
      return undefined;
    }
  };
  const out: ProxyConfig = { noProxy: (o.noProxy ?? '').split(/[\s,]+/).map((s) => s.trim().toLowerCase()).filter(Boolean) };
  const http = parse(o.http);
  const https = parse(o.https);
  if (http) out.http = http;
  if (https) out.https = https;
  return out;
}

/** NO_PROXY semantics as curl and Go: `*`, exact hosts, domain suffixes (`.example.com` or `example.com`), host:port. */
export function bypassesProxy(url: URL, noProxy: string[]): boolean {
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  for (const entry of noProxy) {
    if (entry === '*') return true;
    const [rawHost, p] = entry.startsWith('[') ? [entry.slice(1, entry.indexOf(']')), entry.slice(entry.indexOf(']') + 2)] : entry.split(':');
    if (p && p !== port) continue;
    const h = (rawHost ?? '').replace(/^\*?\./, '');
    if (host === h || host.endsWith(`.${h}`)) return true;
  }
  return false;
}

function proxyAuth(proxy: URL): Record<string, string> {
  if (!proxy.username) return {};
  return { 'Proxy-Authorization': `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}` };
}

/** An HTTPS agent whose connections are TLS inside a CONNECT tunnel through an HTTP proxy. */
class TunnelAgent extends HttpsAgent {
  constructor(
    private readonly proxy: URL,
    opts: HttpsAgentOptions,
  ) {
    super(opts);
  }

  override createConnection(options: ConnectionOptions & { host?: string; port?: number }, cb: (err: Error | null, s?: Duplex) => void): undefined {
    const target = `${options.host}:${options.port ?? 443}`;
    const req = httpRequest({ host: this.proxy.hostname, port: this.proxy.port || 80, method: 'CONNECT', path: target, headers: { Host: target, ...proxyAuth(this.proxy) } });
    req.once('connect', (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        cb(new Error(`proxy CONNECT ${target}: ${res.statusCode}`));
        return;
      }
      const tls = tlsConnect({ ...options, socket, servername: options.servername ?? options.host });
      tls.once('secureConnect', () => cb(null, tls));
      tls.once('error', (e) => cb(e));
    });
    req.once('error', (e) => cb(e));
    req.end();
    return undefined;
  }
}

export class Transport {
  private readonly http: HttpAgent;
  private readonly https: HttpsAgent;
  private readonly proxy: ProxyConfig;
  private httpViaProxy?: HttpAgent;
  private httpsViaProxy?: HttpsAgent;
  private readonly agentOptions: HttpsAgentOptions;

  constructor(o: TransportOptions = {}) {
    const maxSockets = o.maxSockets ?? 16;
    this.agentOptions = { keepAlive: true, maxSockets, scheduling: 'lifo', ...(o.tls ?? {}) };
    this.http = new HttpAgent({ keepAlive: true, maxSockets, scheduling: 'lifo' });
    this.https = new HttpsAgent(this.agentOptions);
    this.proxy = readProxy(o.proxy, o.env ?? process.env);
  }

  /** Sends a request; resolves when the response head arrives. The body is piped with backpressure. */
  request(r: HttpRequest): Promise<HttpResponse> {
    const secure = r.url.protocol === 'https:';
    const proxy = secure ? this.proxy.https : this.proxy.http;
    const useProxy = proxy !== undefined && !bypassesProxy(r.url, this.proxy.noProxy);
    const headers: Record<string, string> = { ...r.headers };
    let req: ClientRequest;
    const common = { method: r.method, headers, ...(r.signal ? { signal: r.signal } : {}) };
    if (useProxy && !secure) {
      this.httpViaProxy ??= new HttpAgent({ keepAlive: true, maxSockets: this.agentOptions.maxSockets ?? 16 });
      headers.Host = r.url.host;
      Object.assign(headers, proxyAuth(proxy));
      req = httpRequest({ ...common, host: proxy.hostname, port: proxy.port || 80, path: r.url.href, agent: this.httpViaProxy });
    } else if (useProxy) {
      this.httpsViaProxy ??= new TunnelAgent(proxy, this.agentOptions);
      req = httpsRequest(r.url, { ...common, agent: this.httpsViaProxy });
    } else if (secure) req = httpsRequest(r.url, { ...common, agent: this.https });
    else req = httpRequest(r.url, { ...common, agent: this.http });

    return new Promise<HttpResponse>((ok, fail) => {
      let settled = false;
      req.once('response', (res) => {
        settled = true;
        ok({ status: res.statusCode ?? 0, headers: res.headers, body: res, header: (n) => first(res.headers[n]) });
      });
      req.once('error', (e) => {
        if (!settled) {
          settled = true;
          fail(e);
        }
      });
      if (r.timeoutMs) {
        const ms = r.timeoutMs;
        req.setTimeout(ms, () => req.destroy(new TimeoutError(r.method, r.url.href, ms)));
      }
      if (r.body === undefined) req.end();
      else if (Buffer.isBuffer(r.body)) req.end(r.body);
      else {
        // An error answer may arrive before the body is sent: the request error (if any) is reported above.
        pipeline(r.body, req).catch((e: unknown) => {
          if (!req.destroyed) req.destroy(e as Error);
        });
      }
    });
  }

  /** Closes idle keep-alive connections (in-flight requests finish). */
  close(): void {
    for (const a of [this.http, this.https, this.httpViaProxy, this.httpsViaProxy]) a?.destroy();
  }
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
