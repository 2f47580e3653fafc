/**
 * The client's error types. Every message names the request (method and URL without credentials) and never
 * includes an Authorization header, a password or a token.
 */

/** One entry of an OCI error body `{"errors":[{code,message,detail}]}`. */
export interface OciErrorEntry {
  code: string;
  message: string;
  detail?: unknown;
}

/** Removes user info from a URL and the values of query parameters that could carry secrets. */
export function redactUrl(url: string | URL): string {
  try {
    const u = new URL(String(url));
    u.username = '';
    u.password = '';
    for (const k of [...u.searchParams.keys()]) {
      if (/pass|token|secret|auth|sig|credential/i.test(k)) u.searchParams.set(k, 'REDACTED');
    }
    return u.toString();
  } catch {
    return '(invalid URL)';
  }
}

/** A registry answered with an unexpected HTTP status. */
export class RegistryError extends Error {
  /** The HTTP status of the answer. */
  readonly status: number;
  /** The OCI `errors[]` of the body (empty when the body had none, e.g. a proxy's HTML page). */
  readonly errors: OciErrorEntry[];
  /** The request method. */
  readonly method: string;
  /** The request URL, without user info. */
  readonly url: string;
  /** The `Retry-After` header, when the registry sent one. */
  readonly retryAfter?: string;

  constructor(o: { status: number; errors?: OciErrorEntry[]; method: string; url: string | URL; retryAfter?: string; bodyText?: string }) {
    const errors = o.errors ?? [];
    const url = redactUrl(o.url);
    const what = errors.length > 0 ? errors.map((e) => `${e.code}: ${e.message}`).join('; ') : (o.bodyText ?? '').replace(/\s+/g, ' ').trim().slice(0, 200) || 'no error body';
    super(`${o.method} ${url}: ${o.status} ${what}`);
    this.name = 'RegistryError';
    this.status = o.status;
    this.errors = errors;
    this.method = o.method;
    this.url = url;
    if (o.retryAfter !== undefined) this.retryAfter = o.retryAfter;
  }

  /** The first error code (e.g. `MANIFEST_UNKNOWN`), or undefined when the body had none. */
  get code(): string | undefined {
    return this.errors[0]?.code;
  }

  /** Whether any entry has `code`. */
  hasCode(code: string): boolean {
    return this.errors.some((e) => e.code === code);
  }
}

/** Content did not hash to the digest it was requested by (or the registry announced). */
export class DigestMismatchError extends Error {
  constructor(
    /** The digest asked for or announced. */
    readonly expected: string,
    /** The digest of the bytes received. */
    readonly actual: string,
    /** Where the bytes came from (method and URL without credentials). */
    readonly source: string,
  ) {
    super(`digest mismatch for ${source}: expected ${expected}, got ${actual}`);
    this.name = 'DigestMismatchError';
  }
}

/** Content was shorter or longer than its descriptor says. */
export class SizeMismatchError extends Error {
  constructor(
    readonly expected: number,
    readonly actual: number,
    readonly source: string,
  ) {
    super(`size mismatch for ${source}: expected ${expected} bytes, got ${actual}`);
    this.name = 'SizeMismatchError';
  }
}

/** The request could not complete over the network after every retry (the cause is the last failure). */
export class NetworkError extends Error {
  constructor(
    readonly method: string,
    readonly url: string,
    options: { cause: unknown },
  ) {
    super(`${method} ${redactUrl(url)}: ${(options.cause as Error)?.message ?? String(options.cause)}`, options);
    this.name = 'NetworkError';
  }
}

/** Authentication failed: no usable credentials, a token server refused them, or the challenge was malformed. */
export class AuthError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuthError';
  }
}

/** The request was aborted by the caller's signal or by the inactivity timeout. */
export class TimeoutError extends Error {
  constructor(
    readonly method: string,
    readonly url: string,
    readonly ms: number,
  ) {
    super(`${method} ${redactUrl(url)}: no progress for ${ms} ms`);
    this.name = 'TimeoutError';
  }
}
