/**
 * The dispatcher (after distribution's registry/handlers/app.go): route match -> name/reference parsing ->
 * read-only policy -> handler -> errors rendered in one place. Every response carries the API version header.
 */
import { type IncomingMessage, type OutgoingHttpHeader, type OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { OciError } from '../spec/errors.ts';
import { memoize } from '../spec/memo.ts';
import { isRepoName, parseRepoName, type RepoName } from '../spec/names.ts';
import { matchRoute, type RouteId, type RouteMatch } from '../spec/routes.ts';
import type { Authorizer } from '../auth/authorizer.ts';
import { requiredAccess } from '../auth/scopes.ts';
import * as H from './handlers.ts';
import { sendError, sendJson } from './http.ts';

/** An extra endpoint outside the API (the built-in token server). */
export interface ExtraEndpoint {
  path: string;
  handle(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): Promise<void>;
}

export interface AppOptions extends H.HandlerEnv {
  log: Logger;
  accessLog: boolean;
  readonly: boolean;
  /** Who may do what (`auth`); absent: everyone may do everything. */
  auth?: Authorizer;
  tokenEndpoint?: ExtraEndpoint;
}

type Handler = (c: H.Ctx) => Promise<void>;

const HANDLERS: Record<Exclude<RouteId, 'base' | 'catalog'>, Partial<Record<string, Handler>>> = {
  tags: { GET: H.listTags, HEAD: H.listTags },
  manifest: { GET: H.getManifest, HEAD: H.getManifest, PUT: H.putManifest, DELETE: H.deleteManifest },
  blob: { GET: H.getBlob, HEAD: H.getBlob, DELETE: H.deleteBlob },
  'upload-start': { POST: H.startUpload },
  upload: { GET: H.uploadStatus, PATCH: H.patchUpload, PUT: H.putUpload, DELETE: H.cancelUpload },
  referrers: { GET: H.referrers, HEAD: H.referrers },
};

const NO_QUERY = new URLSearchParams();

interface ParsedPath {
  route: RouteMatch & { methods: readonly string[] };
  /** The repository name when the route has one and it is valid (an invalid one is rejected after the method check). */
  name: RepoName | undefined;
}

/** Route and repository name of a request path, or null when no route matches. Shared, never modified. */
const parsePath = memoize((path: string): ParsedPath | null => {
  const route = matchRoute(path);
  if (!route) return null;
  return { route, name: route.name !== undefined && isRepoName(route.name) ? route.name : undefined };
});

/**
 * One request's context. A class, not an object literal: a literal with its own `get signal()` closure per
 * request made V8 keep every request's objects alive until a full GC (the accessor ends up referenced from
 * old space), which cost ~40% of the manifest GET rate in GC (docs/performance.md). The abort signal is made
 * on first use only: most requests (manifest and small blob reads) never need it.
 */
class RequestContext implements H.Ctx {
  name = '' as H.Ctx['name'];
  private ac: AbortController | undefined;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly env: H.HandlerEnv,
    readonly log: Logger,
    readonly query: URLSearchParams,
    readonly ref: string,
  ) {}

  get signal(): AbortSignal {
    if (!this.ac) {
      const c = (this.ac = new AbortController());
      const res = this.res;
      if (res.destroyed && !res.writableFinished) c.abort();
      else
        res.once('close', () => {
          if (!res.writableFinished) c.abort();
        });
    }
    return this.ac.signal;
  }
}

const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

type HeaderArg = OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined;

/**
 * The response class the server must be created with (`createServer({ ServerResponse })`): it adds the API
 * version header and `http.headers` to every response as its head is written. Setting them with `setHeader`
 * at the start of each request instead sends Node's `writeHead(status, headers)` down its slow path (every
 * header re-validated one by one): 8-27% of a manifest GET's rate.
 */
export function responseClass(configHeaders: Record<string, string[]>): typeof ServerResponse {
  const fixed: Record<string, string | string[]> = { 'Docker-Distribution-API-Version': 'registry/2.0', ...configHeaders };
  const names = Object.keys(fixed);
  class BerthResponse extends ServerResponse {
    override writeHead(status: number, a?: string | HeaderArg, b?: HeaderArg): this {
      const message = typeof a === 'string' ? a : undefined;
      const headers = typeof a === 'string' ? b : a;
      if (headers !== undefined && !Array.isArray(headers)) {
        // Every caller passes a fresh literal, so it is completed in place (a copy made per response was kept
        // alive past young-generation GCs). A handler's own value for one of these names wins.
        for (const k of names) if (headers[k] === undefined) headers[k] = fixed[k];
      } else {
        for (const k of names) if (!this.hasHeader(k)) this.setHeader(k, fixed[k]!);
      }
      return message === undefined ? super.writeHead(status, headers) : super.writeHead(status, message, headers);
    }
  }
  return BerthResponse as unknown as typeof ServerResponse;
}

export function createApp(opts: AppOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const prefix = opts.prefix;

  return (req, res) => {
    const started = opts.accessLog ? process.hrtime.bigint() : 0n;
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    let path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    // Most requests carry no query: they share one empty, never-modified instance.
    const query = q < 0 ? NO_QUERY : new URLSearchParams(rawUrl.slice(q + 1));
    const log = opts.log;
    let user: string | undefined;
    if (opts.accessLog) {
      res.once('finish', () => {
        log.info({
          msg: 'request',
          reqId: (req.headers['x-request-id'] as string | undefined)?.slice(0, 64) ?? randomUUID(),
          user,
          method: req.method,
          path: path.slice(0, 512),
          status: res.statusCode,
          bytesIn: Number(req.headers['content-length'] ?? 0) || undefined,
          bytesOut: Number(res.getHeader('content-length') ?? 0),
          ms: Number(process.hrtime.bigint() - started) / 1e6,
          ua: req.headers['user-agent'],
        });
      });
    }
    const fail = (e: unknown): void => sendError(req, res, e, log);
    try {
      if (prefix) {
        if (!path.startsWith(`${prefix}/`)) throw new OciError('NOT_FOUND');
        path = path.slice(prefix.length);
      }
      if (opts.tokenEndpoint && path === opts.tokenEndpoint.path) {
        opts.tokenEndpoint.handle(req, res, query).catch(fail);
        return;
      }
      const parsed = parsePath(path);
      if (!parsed) throw new OciError('NOT_FOUND', { path: path.slice(0, 200) });
      const route = parsed.route;
      const method = req.method ?? 'GET';
      if (!route.methods.includes(method)) {
        throw new OciError('UNSUPPORTED', { reason: `method ${method} not allowed here` }, { Allow: route.methods.join(', ') });
      }
      // The name is validated before it appears in a challenge or a scope.
      const name = route.name === undefined ? undefined : (parsed.name ?? parseRepoName(route.name));
      if (opts.auth) {
        const mountFrom = route.id === 'upload-start' && query.has('mount') ? query.get('from') ?? undefined : undefined;
        const required = requiredAccess(route.id, method, name, mountFrom === undefined ? undefined : parseRepoName(mountFrom));
        opts.auth
          .authorize(req.headers.authorization, required, H.origin(req, opts))
          .then((d) => {
            if (!d.ok) throw new OciError('UNAUTHORIZED', d.detail ?? d.message, { 'WWW-Authenticate': d.challenge });
            user = d.user;
            serve(route.id, method, name, route.ref ?? '');
          })
          .catch(fail);
        return;
      }
      serve(route.id, method, name, route.ref ?? '');
    } catch (e) {
      fail(e);
    }

    function serve(routeId: RouteId, method: string, name: ReturnType<typeof parseRepoName> | undefined, ref: string): void {
      if (routeId === 'base') {
        req.resume();
        sendJson(res, 200, {}, {}, method === 'HEAD');
        return;
      }
      const ctx = new RequestContext(req, res, opts, log, query, ref);
      let handler: Handler | undefined;
      if (routeId === 'catalog') {
        handler = H.catalog;
      } else {
        ctx.name = name!;
        handler = HANDLERS[routeId][method];
      }
      if (opts.readonly && WRITES.has(method)) {
        fail(new OciError('UNSUPPORTED', { reason: 'the registry is in read-only mode' }));
        return;
      }
      handler!(ctx).catch(fail);
    }
  };
}
