/**
 * The OCI error-code table and the one error type every layer throws.
 * The HTTP status always comes from this table, never from a call site.
 */

/** Error codes and their HTTP statuses (OCI distribution-spec plus distribution's extras). */
export const ERROR_TABLE = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  RANGE_INVALID: { status: 416, message: 'invalid content range' },
  MANIFEST_TOO_LARGE: { status: 413, message: 'manifest too large', wire: 'MANIFEST_INVALID' },
  NOT_FOUND: { status: 404, message: 'route not found' },
  UNKNOWN: { status: 500, message: 'unknown error' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
} as const satisfies Record<string, { status: number; message: string; wire?: string }>;

export type ErrorCode = keyof typeof ERROR_TABLE;

/** The single error type of Berth's domain: rendered once, at the HTTP edge. */
export class OciError extends Error {
  readonly code: ErrorCode;
  readonly detail: unknown;
  /** Extra response headers the error requires (e.g. `Content-Range` on a 416). */
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, detail?: unknown, headers: Record<string, string> = {}) {
    super(`${code}: ${ERROR_TABLE[code].message}${detail === undefined ? '' : ` (${typeof detail === 'string' ? detail : JSON.stringify(detail)})`}`);
    this.name = 'OciError';
    this.code = code;
    this.detail = detail;
    this.headers = headers;
  }

  get status(): number {
    return ERROR_TABLE[this.code].status;
  }

  /** The error body `{"errors":[{code,message,detail}]}` as the spec defines it. */
  toBody(): { errors: Array<{ code: string; message: string; detail?: unknown }> } {
    const entry: { status: number; message: string; wire?: string } = ERROR_TABLE[this.code];
    const e: { code: string; message: string; detail?: unknown } = { code: entry.wire ?? this.code, message: entry.message };
    if (this.detail !== undefined) e.detail = this.detail;
    return { errors: [e] };
  }
}

export function isOciError(e: unknown): e is OciError {
  return e instanceof OciError;
}
