/**
 * Bearer tokens of the Docker token spec: verification (for `auth.token`) and issuing (Berth's built-in
 * token server). JWT mechanics are jose's; what is Berth's own is which key to trust and what the claims mean.
 */
import { createPublicKey, randomUUID, X509Certificate, type KeyObject } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify, SignJWT, type JWK } from 'jose';
import { type ResourceActions } from './scopes.ts';
import { jwkThumbprint, libtrustKeyId, sameKey, type TrustedKeys } from './keys.ts';

export const DEFAULT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'EdDSA'];
const LEEWAY_SECONDS = 60;

export class TokenError extends Error {}

export interface VerifiedToken {
  subject: string;
  access: ResourceActions[];
}

export interface VerifierOptions {
  issuer: string;
  service: string;
  trusted: TrustedKeys;
  algorithms?: string[];
}

/** The chain in `x5c` must be valid now, each certificate signed by the next, the last by (or equal to) a root. */
function verifyChain(x5c: unknown, roots: X509Certificate[]): KeyObject {
  if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > 10) throw new TokenError('malformed x5c header');
  const now = Date.now();
  const certs = x5c.map((c) => {
    if (typeof c !== 'string') throw new TokenError('malformed x5c header');
    try {
      return new X509Certificate(Buffer.from(c, 'base64'));
    } catch {
      throw new TokenError('malformed certificate in x5c');
    }
  });
  for (const c of certs) {
    if (Date.parse(c.validFrom) > now || Date.parse(c.validTo) < now) throw new TokenError('certificate in x5c is not valid now');
  }
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!certs[i]!.checkIssued(certs[i + 1]!) || !certs[i]!.verify(certs[i + 1]!.publicKey)) throw new TokenError('x5c chain is broken');
  }
  const last = certs[certs.length - 1]!;
  const anchored = roots.some((r) => r.fingerprint256 === last.fingerprint256 || (last.checkIssued(r) && last.verify(r.publicKey)));
  if (!anchored) throw new TokenError('x5c chain does not end in a trusted root certificate');
  return certs[0]!.publicKey;
}

function parseAccess(v: unknown): ResourceActions[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new TokenError('malformed access claim');
  return v.map((e: unknown) => {
    const r = e as { type?: unknown; name?: unknown; actions?: unknown };
    if (typeof r?.type !== 'string' || typeof r.name !== 'string' || !Array.isArray(r.actions) || !r.actions.every((a) => typeof a === 'string')) {
      throw new TokenError('malformed access claim');
    }
    return { type: r.type, name: r.name, actions: r.actions as string[] };
  });
}

export class TokenVerifier {
  private readonly algorithms: string[];
  constructor(private readonly o: VerifierOptions) {
    this.algorithms = (o.algorithms?.length ? o.algorithms : DEFAULT_ALGORITHMS).filter((a) => a !== 'none' && !a.startsWith('HS'));
  }

  async verify(token: string): Promise<VerifiedToken> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new TokenError('malformed token');
    }
    if (typeof header.alg !== 'string' || !this.algorithms.includes(header.alg)) throw new TokenError(`signing algorithm ${String(header.alg)} is not accepted`);
    let key: KeyObject | undefined;
    if (header.x5c !== undefined) key = verifyChain(header.x5c, this.o.trusted.roots);
    else if (header.jwk !== undefined) {
      let k: KeyObject;
      try {
        k = createPublicKey({ key: header.jwk as JWK & import('node:crypto').JsonWebKey, format: 'jwk' });
      } catch {
        throw new TokenError('malformed jwk header');
      }
      const known = this.o.trusted.keys.get(jwkThumbprint(k)) ?? this.o.trusted.keys.get(libtrustKeyId(k));
      if (!known || !sameKey(known, k)) throw new TokenError('the key in the jwk header is not trusted');
      key = known;
    } else if (typeof header.kid === 'string') {
      key = this.o.trusted.keys.get(header.kid);
      if (!key) throw new TokenError(`unknown signing key ${header.kid.slice(0, 80)}`);
    } else throw new TokenError('the token names no signing key (x5c, jwk or kid)');
    try {
      const { payload } = await jwtVerify(token, key, {
        issuer: this.o.issuer,
        audience: this.o.service,
        algorithms: this.algorithms,
        clockTolerance: LEEWAY_SECONDS,
        requiredClaims: ['exp'],
      });
      return { subject: typeof payload.sub === 'string' ? payload.sub : '', access: parseAccess(payload.access) };
    } catch (e) {
      if (e instanceof TokenError) throw e;
      throw new TokenError((e as Error).message || 'invalid token');
    }
  }
}

export interface IssuerOptions {
  /** The `iss` claim (auth.token.issuer of the registries that trust this server). */
  issuer: string;
  /** Private key (EC P-256/384, RSA, or Ed25519). */
  key: KeyObject;
  /** Seconds a token lives (default 300). */
  expiration?: number;
  /** Seconds a refresh token lives (default 30 days). */
  refreshExpiration?: number;
}

function algFor(key: KeyObject): string {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec') return d?.namedCurve === 'secp384r1' ? 'ES384' : d?.namedCurve === 'secp521r1' ? 'ES512' : 'ES256';
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  throw new Error(`unsupported signing key type ${key.asymmetricKeyType}`);
}

export interface IssuedToken {
  token: string;
  expiresIn: number;
  issuedAt: string;
}

export class TokenIssuer {
  readonly kid: string;
  readonly alg: string;
  readonly publicKey: KeyObject;
  constructor(private readonly o: IssuerOptions) {
    this.alg = algFor(o.key);
    this.publicKey = createPublicKey(o.key);
    // The libtrust id verifies with distribution 2.8 and Berth; 3.x also matches it against a bundle or JWKS kid.
    this.kid = libtrustKeyId(this.publicKey);
  }

  /** The trusted-key set of this issuer, for a registry in the same process. */
  trusted(): TrustedKeys {
    return { roots: [], keys: new Map([[this.kid, this.publicKey]]) };
  }

  /** The public key as a JWKS document, for `auth.token.jwks` of registries elsewhere. */
  jwks(): { keys: JWK[] } {
    return { keys: [{ ...(this.publicKey.export({ format: 'jwk' }) as JWK), kid: this.kid, alg: this.alg, use: 'sig' }] };
  }

  async issue(subject: string, audience: string, access: ResourceActions[]): Promise<IssuedToken> {
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = this.o.expiration ?? 300;
    const token = await new SignJWT({ access })
      .setProtectedHeader({ alg: this.alg, typ: 'JWT', kid: this.kid })
      .setIssuer(this.o.issuer)
      .setSubject(subject)
      .setAudience(audience)
      .setIssuedAt(now)
      .setNotBefore(now - 1)
      .setExpirationTime(now + expiresIn)
      .setJti(randomUUID())
      .sign(this.o.key);
    return { token, expiresIn, issuedAt: new Date(now * 1000).toISOString() };
  }

  /** A refresh token: a signed, long-lived statement of who authenticated, usable only at this token server. */
  async refreshToken(subject: string, audience: string): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ typ: 'refresh' })
      .setProtectedHeader({ alg: this.alg, typ: 'JWT', kid: this.kid })
      .setIssuer(this.o.issuer)
      .setSubject(subject)
      .setAudience(`${audience}#refresh`)
      .setIssuedAt(now)
      .setExpirationTime(now + (this.o.refreshExpiration ?? 30 * 24 * 3600))
      .setJti(randomUUID())
      .sign(this.o.key);
  }

  /** The subject of a valid refresh token for `audience`; throws {@link TokenError}. */
  async verifyRefresh(token: string, audience: string): Promise<string> {
    try {
      const { payload } = await jwtVerify(token, this.publicKey, { issuer: this.o.issuer, audience: `${audience}#refresh`, algorithms: [this.alg], requiredClaims: ['exp', 'sub'] });
      if (payload.typ !== 'refresh') throw new TokenError('not a refresh token');
      return payload.sub!;
    } catch (e) {
      throw new TokenError((e as Error).message || 'invalid refresh token');
    }
  }
}

