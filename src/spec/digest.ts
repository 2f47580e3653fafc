/** Digest grammar and helpers (OCI image-spec descriptor digests). */
import { createHash, type Hash } from 'node:crypto';
import { OciError } from './errors.ts';

/** A validated digest string such as `sha256:<64 hex>`. */
export type Digest = string & { readonly __brand: 'Digest' };

export type DigestAlgorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
const GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export interface ParsedDigest {
  digest: Digest;
  algorithm: DigestAlgorithm;
  hex: string;
}

/** Returns true when `s` follows the digest grammar with a supported algorithm and well-formed hex. */
export function isDigest(s: string): s is Digest {
  return tryParseDigest(s) !== undefined;
}

export function tryParseDigest(s: string): ParsedDigest | undefined {
  if (s.length > 200 || !GRAMMAR.test(s)) return undefined;
  const i = s.indexOf(':');
  const algorithm = s.slice(0, i);
  const hex = s.slice(i + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') return undefined;
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) return undefined;
  return { digest: s as Digest, algorithm, hex };
}

/** Parses a digest or throws `DIGEST_INVALID` naming it. */
export function parseDigest(s: string): ParsedDigest {
  const p = tryParseDigest(s);
  if (!p) throw new OciError('DIGEST_INVALID', { digest: s.slice(0, 200), reason: 'invalid or unsupported digest' });
  return p;
}

export function newHash(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(data: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): Digest {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}` as Digest;
}
