/**
 * Berth's built-in token server (the Docker token spec): `GET <path>?service=&scope=&offline_token=` with
 * Basic credentials or anonymously, and the OAuth2 `POST` form with `grant_type=password|refresh_token`.
 * Users come from an htpasswd file, permissions from an access-rules file; a token holds the intersection of
 * what was asked for and what the rules allow, never more.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { basicCredentials } from '../auth/authorizer.ts';
import type { Htpasswd } from '../auth/htpasswd.ts';
import type { RulesFile } from '../auth/rules.ts';
import { formatScope, parseScopes } from '../auth/scopes.ts';
import { TokenError, type TokenIssuer } from '../auth/token.ts';
import type { ExtraEndpoint } from './app.ts';
import { sendJson } from './http.ts';
import { parseAddr } from './setup.ts';

export interface TokenServerOptions {
  path: string;
  service: string;
  realm: string;
  issuer: TokenIssuer;
  users: Htpasswd;
  rules: RulesFile;
  log: Logger;
}

const MAX_FORM = 64 * 1024;

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_FORM) throw new HttpProblem(413, 'request body too large');
    chunks.push(c as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

class HttpProblem extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function tokenEndpoint(o: TokenServerOptions): ExtraEndpoint {
  const challenge = { 'WWW-Authenticate': `Basic realm="${o.realm.replace(/"/g, '')}"` };
  const denied = (): HttpProblem => new HttpProblem(401, 'invalid username or password', challenge);

  async function login(user: string, password: string): Promise<string> {
    if (!(await o.users.verify(user, password))) throw denied();
    return user;
  }

  async function answer(res: ServerResponse, user: string | undefined, service: string | null, scopes: string[], offline: boolean, oauth: boolean): Promise<void> {
    if (service !== null && service !== o.service) throw new HttpProblem(400, `unknown service ${JSON.stringify(service.slice(0, 100))}`);
    const requested = parseScopes(scopes);
    const granted = o.rules.get().grant(user, requested);
    const t = await o.issuer.issue(user ?? '', o.service, granted);
    const body: Record<string, unknown> = { token: t.token, access_token: t.token, expires_in: t.expiresIn, issued_at: t.issuedAt };
    if (oauth) body.scope = granted.map(formatScope).join(' ');
    if (offline && user !== undefined) body.refresh_token = await o.issuer.refreshToken(user, o.service);
    o.log.debug({ msg: 'token issued', user: user ?? '(anonymous)', granted: granted.map(formatScope) });
    sendJson(res, 200, body, { 'Cache-Control': 'no-store' });
  }

  return {
    path: o.path,
    async handle(req, res, query) {
      try {
        if (req.method === 'GET' || req.method === 'HEAD') {
          req.resume();
          const basic = basicCredentials(req.headers.authorization);
          if (req.headers.authorization && !basic) throw denied();
          const user = basic ? await login(basic.user, basic.password) : undefined;
          await answer(res, user, query.get('service'), query.getAll('scope'), query.get('offline_token') === 'true', false);
          return;
        }
        if (req.method === 'POST') {
          const form = await readForm(req);
          const grant = form.get('grant_type');
          let user: string;
          if (grant === 'password') user = await login(form.get('username') ?? '', form.get('password') ?? '');
          else if (grant === 'refresh_token') {
            try {
              user = await o.issuer.verifyRefresh(form.get('refresh_token') ?? '', o.service);
            } catch (e) {
              if (e instanceof TokenError) throw new HttpProblem(401, `invalid refresh token: ${e.message}`);
              throw e;
            }
          } else throw new HttpProblem(400, `unsupported grant_type ${JSON.stringify((grant ?? '').slice(0, 50))} (expected password or refresh_token)`);
          await answer(res, user, form.get('service'), form.getAll('scope'), form.get('access_type') === 'offline', true);
          return;
        }
        req.resume();
        throw new HttpProblem(405, 'use GET or POST', { Allow: 'GET, POST' });
      } catch (e) {
        if (!(e instanceof HttpProblem)) throw e;
        sendJson(res, e.status, { errors: [{ code: e.status === 401 ? 'UNAUTHORIZED' : 'UNSUPPORTED', message: e.message }], error: e.message }, e.headers);
      }
    },
  };
}

/** `berth token-server`: only the token endpoint, on its own listener. */
export async function serveTokenEndpoint(endpoint: ExtraEndpoint, addr: string, log: Logger): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    res.once('finish', () => log.info({ msg: 'request', method: req.method, path: url.pathname, status: res.statusCode }));
    if (url.pathname !== endpoint.path) {
      req.resume();
      sendJson(res, 404, { errors: [{ code: 'NOT_FOUND', message: `the token endpoint is ${endpoint.path}` }] });
      return;
    }
    endpoint.handle(req, res, url.searchParams).catch((e: unknown) => {
      log.error({ err: e }, 'token endpoint failed');
      if (!res.headersSent) sendJson(res, 500, { errors: [{ code: 'UNKNOWN', message: 'internal error' }] });
      else res.destroy();
    });
  });
  const { host, port } = parseAddr(addr);
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen({ port, ...(host ? { host } : {}) }, () => ok());
  });
  const actual = (server.address() as AddressInfo).port;
  log.info({ msg: 'listening', port: actual, path: endpoint.path, role: 'token-server' });
  return { port: actual, close: () => new Promise<void>((ok) => server.close(() => ok())) };
}
