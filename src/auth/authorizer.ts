/**
 * Access decisions for the registry API: `htpasswd` (Basic; any valid user may do anything, as in
 * distribution) or `token` (Bearer JWTs whose `access` claim must cover the request). A refusal carries the
 * `WWW-Authenticate` challenge that tells the client where and what to ask for.
 */
import { Htpasswd } from './htpasswd.ts';
import { covers, formatScope, type ResourceActions } from './scopes.ts';
import { TokenError, type TokenVerifier } from './token.ts';

export type AuthDecision =
  | { ok: true; user?: string }
  | { ok: false; challenge: string; message: string; detail?: ResourceActions[] };

export interface Authorizer {
  readonly kind: 'htpasswd' | 'token';
  /** `realmBase` is `scheme://host` of the request, for realms derived from it (`autoredirect`). */
  authorize(authorization: string | undefined, required: ResourceActions[], realmBase: string): Promise<AuthDecision>;
}

const quote = (s: string): string => `"${s.replace(/["\\]/g, '\\$&')}"`;

/** Decodes `Basic base64(user:password)`; undefined when absent or malformed. */
export function basicCredentials(authorization: string | undefined): { user: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization ?? '');
  if (!m) return undefined;
  const s = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = s.indexOf(':');
  if (i <= 0) return undefined;
  return { user: s.slice(0, i), password: s.slice(i + 1) };
}

export function htpasswdAuthorizer(file: Htpasswd, realm: string): Authorizer {
  const challenge = `Basic realm=${quote(realm)}`;
  return {
    kind: 'htpasswd',
    async authorize(authorization) {
      const c = basicCredentials(authorization);
      if (!c) return { ok: false, challenge, message: 'authentication required' };
      if (!(await file.verify(c.user, c.password))) return { ok: false, challenge, message: 'invalid username or password' };
      return { ok: true, user: c.user };
    },
  };
}

export interface TokenAuthOptions {
  /** Where clients get tokens; with `autoredirect`, a path appended to the request's own origin. */
  realm: string;
  autoredirect?: boolean;
  service: string;
  verifier: TokenVerifier;
}

export function tokenAuthorizer(o: TokenAuthOptions): Authorizer {
  return {
    kind: 'token',
    async authorize(authorization, required, realmBase) {
      const realm = o.autoredirect ? `${realmBase}${o.realm}` : o.realm;
      const scope = required.length > 0 ? `,scope=${quote(required.map(formatScope).join(' '))}` : '';
      const base = `Bearer realm=${quote(realm)},service=${quote(o.service)}${scope}`;
      const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
      if (!m) return { ok: false, challenge: base, message: 'authentication required', detail: required };
      let verified;
      try {
        verified = await o.verifier.verify(m[1]!);
      } catch (e) {
        if (!(e instanceof TokenError)) throw e;
        return { ok: false, challenge: `${base},error="invalid_token"`, message: `invalid token: ${e.message}`.slice(0, 300) };
      }
      if (!covers(verified.access, required)) {
        return { ok: false, challenge: `${base},error="insufficient_scope"`, message: 'insufficient scope', detail: required };
      }
      return { ok: true, user: verified.subject };
    },
  };
}
