/**
 * The client side of registry authentication: `WWW-Authenticate` challenges, Basic credentials, and the
 * Docker token flow (GET with Basic or anonymous, OAuth2 POST with a refresh token), with tokens cached per
 * (realm, service, scope set) until `expires_in` minus a leeway, and concurrent fetches of one token shared.
 */
import type { Transport } from './transport.ts';
import { readBody } from './transport.ts';
import { AuthError, redactUrl } from './errors.ts';

/** Credentials for one registry. */
export type Credentials =
  /** A user name and password (or access token used as a password). */
  | { username: string; password: string }
  /** A refresh token from an earlier login (docker's `identitytoken`), exchanged at the token server. */
  | { identityToken: string; username?: string }
  /** A bearer token sent as is (no token server involved). */
  | { registryToken: string };

/** Finds credentials for a registry host (`host[:port]`); undefined means anonymous. */
export type CredentialResolver = (host: string) => Promise<Credentials | undefined>;

/** One parsed challenge of a `WWW-Authenticate` header. */
export interface Challenge {
  /** Lowercased scheme: `bearer`, `basic`, ... */
  scheme: string;
  /** Parameters with lowercased names (`realm`, `service`, `scope`, `error`). */
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header (RFC 7235): several challenges, quoted strings with escapes and commas,
 * token68 values. Unparseable parts are skipped.
 */
export function parseChallenges(header: string | undefined): Challenge[] {
  const out: Challenge[] = [];
  if (!header) return out;
  const s = header;
  let i = 0;
  const ws = (): void => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === ',')) i++;
  };
  const token = (): string => {
    const m = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/.exec(s.slice(i));
    if (!m) return '';
    i += m[0].length;
    return m[0];
  };
  let current: Challenge | undefined;
  while (i < s.length) {
    ws();
    const start = i;
    const name = token();
    if (!name) {
      i++;
      continue;
    }
    let j = i;
    while (s[j] === ' ' || s[j] === '\t') j++;
    if (s[j] === '=' && current && s[j + 1] !== '=') {
      // auth-param
      i = j + 1;
      while (s[i] === ' ' || s[i] === '\t') i++;
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++;
      } else value = token();
      current.params[name.toLowerCase()] = value;
      continue;
    }
    if (i === start) break;
    current = { scheme: name.toLowerCase(), params: {} };
    out.push(current);
    i = j;
  }
  return out;
}

/** Scope strings the token spec uses: `repository:<name>:<actions>`, `registry:catalog:*`. */
export function scopeFor(repo: string, actions: string[]): string {
  return `repository:${repo}:${actions.join(',')}`;
}

/** Merges scope strings: the same resource's actions are unioned; the result is sorted (a cache key). */
export function mergeScopes(scopes: string[]): string[] {
  const m = new Map<string, Set<string>>();
  for (const s of scopes.flatMap((x) => x.split(' ')).filter(Boolean)) {
    const last = s.lastIndexOf(':');
    if (last <= 0) continue;
    const res = s.slice(0, last);
    const set = m.get(res) ?? new Set<string>();
    for (const a of s.slice(last + 1).split(',').filter(Boolean)) set.add(a);
    m.set(res, set);
  }
  return [...m].map(([r, a]) => `${r}:${[...a].sort().join(',')}`).sort();
}

function covers(granted: string[], wanted: string[]): boolean {
  const g = new Map<string, Set<string>>();
  for (const s of granted) {
    const last = s.lastIndexOf(':');
    g.set(s.slice(0, last), new Set(s.slice(last + 1).split(',')));
  }
  return wanted.every((s) => {
    const last = s.lastIndexOf(':');
    const have = g.get(s.slice(0, last));
    return have !== undefined && s.slice(last + 1).split(',').every((a) => have.has(a) || have.has('*'));
  });
}

interface CachedToken {
  token: string;
  scopes: string[];
  realm: string;
  service: string;
  expiresAt: number;
}

export interface AuthenticatorOptions {
  transport: Transport;
  resolve: CredentialResolver;
  /** Registry host (`host[:port]`) credentials are looked up for. */
  host: string;
  userAgent: string;
  /** Ask the token server for a refresh token (`offline_token=true`), as a login does. */
  offlineToken?: boolean;
  /** OAuth2 client id sent to token servers (default `berth-client`). */
  clientId?: string;
  /** Seconds before `expires_in` a token is considered expired (default 10, at most a third of the lifetime). */
  leewaySeconds?: number;
  timeoutMs?: number;
}

/** Counters of the authenticator's work (for tests, metrics and the CLI's verbose output). */
export interface AuthStats {
  /** Requests sent to token servers. */
  tokenRequests: number;
  /** Times a cached token was reused instead of asking. */
  cacheHits: number;
}

export class Authenticator {
  /** The registry's last challenge (undefined until one was seen; `none` scheme after an open 200). */
  private challenge: Challenge | undefined;
  private readonly tokens: CachedToken[] = [];
  private readonly inflight = new Map<string, Promise<CachedToken>>();
  private refreshTokens = new Map<string, string>();
  private creds: Promise<Credentials | undefined> | undefined;
  readonly stats: AuthStats = { tokenRequests: 0, cacheHits: 0 };

  constructor(private readonly o: AuthenticatorOptions) {}

  /** Whether the registry's auth scheme is known (a first request has been answered). */
  get known(): boolean {
    return this.challenge !== undefined;
  }

  /** Records that the registry answered without a challenge. */
  markOpen(): void {
    this.challenge ??= { scheme: 'none', params: {} };
  }

  /** The refresh token a login received, if any (to store as an identity token). */
  refreshTokenFor(): string | undefined {
    return [...this.refreshTokens.values()][0];
  }

  private credentials(): Promise<Credentials | undefined> {
    this.creds ??= this.o.resolve(this.o.host);
    return this.creds;
  }

  /** The Authorization header for a request needing `scopes`, or undefined (anonymous). */
  async header(scopes: string[]): Promise<string | undefined> {
    const c = this.challenge;
    if (!c || c.scheme === 'none') return undefined;
    const creds = await this.credentials();
    if (creds && 'registryToken' in creds) return `Bearer ${creds.registryToken}`;
    if (c.scheme === 'basic') {
      if (creds && 'password' in creds) return basicHeader(creds.username, creds.password);
      return undefined;
    }
    if (c.scheme === 'bearer') {
      const t = await this.token(c, mergeScopes(scopes));
      return `Bearer ${t.token}`;
    }
    return undefined;
  }

  /**
   * Handles a 401: records the challenge, drops the token that was refused, and says whether a retry with
   * new credentials can help.
   */
  async unauthorized(wwwAuthenticate: string | undefined, scopes: string[], sent: string | undefined): Promise<boolean> {
    const all = parseChallenges(wwwAuthenticate);
    const c = all.find((x) => x.scheme === 'bearer') ?? all.find((x) => x.scheme === 'basic');
    if (!c) return false;
    const before = this.challenge;
    this.challenge = c;
    if (c.scheme === 'bearer') {
      if (!c.params.realm) throw new AuthError(`bearer challenge without a realm from ${this.o.host}`);
      if (sent?.startsWith('Bearer ')) {
        const tok = sent.slice(7);
        for (let i = this.tokens.length - 1; i >= 0; i--) if (this.tokens[i]!.token === tok) this.tokens.splice(i, 1);
      }
      const wanted = mergeScopes([...scopes, ...(c.params.scope ? [c.params.scope] : [])]);
      await this.token(c, wanted, true);
      return true;
    }
    // Basic: a retry helps only if we did not already send our credentials.
    const creds = await this.credentials();
    return before?.scheme !== 'basic' && creds !== undefined && 'password' in creds && !sent;
  }

  private async token(c: Challenge, scopes: string[], fresh = false): Promise<CachedToken> {
    const realm = c.params.realm!;
    const service = c.params.service ?? '';
    const now = Date.now();
    if (!fresh) {
      for (let i = this.tokens.length - 1; i >= 0; i--) {
        const t = this.tokens[i]!;
        if (t.expiresAt <= now) this.tokens.splice(i, 1);
        else if (t.realm === realm && t.service === service && covers(t.scopes, scopes)) {
          this.stats.cacheHits++;
          return t;
        }
      }
    }
    const key = `${realm} ${service} ${scopes.join(' ')}`;
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.fetchToken(realm, service, scopes).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async fetchToken(realm: string, service: string, scopes: string[]): Promise<CachedToken> {
    const creds = await this.credentials();
    const rkey = `${realm} ${service}`;
    const refresh = this.refreshTokens.get(rkey) ?? (creds && 'identityToken' in creds ? creds.identityToken : undefined);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new AuthError(`invalid token realm ${JSON.stringify(realm.slice(0, 200))} from ${this.o.host}`);
    }
    const clientId = this.o.clientId ?? 'berth-client';
    const headers: Record<string, string> = { 'User-Agent': this.o.userAgent, Accept: 'application/json' };
    let method = 'GET';
    let body: Buffer | undefined;
    if (refresh) {
      method = 'POST';
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh, client_id: clientId });
      if (service) form.set('service', service);
      if (scopes.length) form.set('scope', scopes.join(' '));
      body = Buffer.from(form.toString());
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      headers['Content-Length'] = String(body.length);
    } else {
      if (service) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      if (creds && 'password' in creds) {
        headers.Authorization = basicHeader(creds.username, creds.password);
        if (this.o.offlineToken) {
          url.searchParams.set('offline_token', 'true');
          url.searchParams.set('client_id', clientId);
        }
      }
    }
    this.stats.tokenRequests++;
    const res = await this.o.transport.request({ method, url, headers, ...(body ? { body } : {}), ...(this.o.timeoutMs ? { timeoutMs: this.o.timeoutMs } : {}) });
    const text = (await readBody(res, 1024 * 1024)).toString('utf8');
    if (res.status !== 200) {
      if (refresh && this.refreshTokens.get(rkey) === refresh) this.refreshTokens.delete(rkey);
      let msg = '';
      try {
        const j = JSON.parse(text) as { errors?: Array<{ message?: string }>; error?: string; details?: string };
        msg = j.errors?.[0]?.message ?? j.details ?? j.error ?? '';
      } catch {
        msg = text.slice(0, 200);
      }
      throw new AuthError(`token server ${method} ${redactUrl(url)}: ${res.status}${msg ? ` ${msg}` : ''}`);
    }
    let j: { token?: string; access_token?: string; expires_in?: number; issued_at?: string; refresh_token?: string };
    try {
      j = JSON.parse(text) as typeof j;
    } catch {
      throw new AuthError(`token server ${redactUrl(url)} answered with invalid JSON`);
    }
    const token = j.token || j.access_token;
    if (!token) throw new AuthError(`token server ${redactUrl(url)} answered without a token`);
    if (j.refresh_token) this.refreshTokens.set(rkey, j.refresh_token);
    const lifetime = typeof j.expires_in === 'number' && j.expires_in > 0 ? j.expires_in : 60;
    const issued = j.issued_at ? Date.parse(j.issued_at) : NaN;
    const start = Number.isNaN(issued) || issued > Date.now() ? Date.now() : issued;
    const leeway = Math.min(this.o.leewaySeconds ?? 10, lifetime / 3);
    const t: CachedToken = { token, scopes, realm, service, expiresAt: start + (lifetime - leeway) * 1000 };
    this.tokens.push(t);
    if (this.tokens.length > 256) this.tokens.shift();
    return t;
  }
}

export function basicHeader(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}
