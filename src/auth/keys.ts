/**
 * Keys for bearer tokens: libtrust key ids (what distribution 2.8-era token servers put in `kid`), JWK
 * thumbprints (what distribution 3 uses), and the trusted key set built from a root certificate bundle and/or
 * a JWKS file.
 */
import { createHash, createPublicKey, X509Certificate, type KeyObject, type JsonWebKey } from 'node:crypto';
import { readFileSync } from 'node:fs';

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(b: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of b) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

/** libtrust's key id: SHA-256 of the DER public key, first 240 bits, base32, in 12 groups of 4 joined by `:`. */
export function libtrustKeyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ type: 'spki', format: 'der' });
  return base32(createHash('sha256').update(der).digest().subarray(0, 30)).match(/.{4}/g)!.join(':');
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key. */
export function jwkThumbprint(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' }) as JsonWebKey;
  const members: Record<string, string | undefined> =
    jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : jwk.kty === 'OKP' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x } : { e: jwk.e, kty: jwk.kty, n: jwk.n };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

export function sameKey(a: KeyObject, b: KeyObject): boolean {
  return a.export({ type: 'spki', format: 'der' }).equals(b.export({ type: 'spki', format: 'der' }));
}

export interface TrustedKeys {
  /** Root certificates that `x5c` chains must end in. */
  roots: X509Certificate[];
  /** Public keys by every id a token may name them with (libtrust id, thumbprint, JWKS `kid`). */
  keys: Map<string, KeyObject>;
}

export function parseCertificates(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((c) => new X509Certificate(c));
}

export function addKey(t: TrustedKeys, key: KeyObject, kid?: string): void {
  for (const id of [libtrustKeyId(key), jwkThumbprint(key), ...(kid ? [kid] : [])]) t.keys.set(id, key);
}

/** Loads `rootcertbundle` (PEM certificates) and `jwks` (a JSON Web Key Set file); either may be absent. */
export function loadTrustedKeys(opts: { rootcertbundle?: string; jwks?: string }): TrustedKeys {
  const t: TrustedKeys = { roots: [], keys: new Map() };
  if (opts.rootcertbundle) {
    const certs = parseCertificates(readFileSync(opts.rootcertbundle, 'utf8'));
    if (certs.length === 0) throw new Error(`auth.token.rootcertbundle ${opts.rootcertbundle}: no PEM certificates found`);
    for (const c of certs) {
      t.roots.push(c);
      addKey(t, c.publicKey);
    }
  }
  if (opts.jwks) {
    const set = JSON.parse(readFileSync(opts.jwks, 'utf8')) as { keys?: Array<JsonWebKey & { kid?: string }> };
    if (!Array.isArray(set.keys) || set.keys.length === 0) throw new Error(`auth.token.jwks ${opts.jwks}: expected {"keys": [...]}`);
    for (const jwk of set.keys) addKey(t, createPublicKey({ key: jwk, format: 'jwk' }), jwk.kid);
  }
  return t;
}
