/** The retry policy: exponential backoff with full jitter on network errors, 5xx and 429 (`Retry-After`). */

export interface RetryOptions {
  /** Total attempts per request, first one included (default 4; 1 disables retries). */
  attempts?: number;
  /** Delay before the first retry, doubled each time, with full jitter (default 200 ms). */
  baseDelayMs?: number;
  /** Upper bound of a backoff delay (default 10 s). */
  maxDelayMs?: number;
  /** A `Retry-After` longer than this is not waited for: the error is returned instead (default 60 s). */
  maxRetryAfterMs?: number;
}

export type ResolvedRetry = Required<RetryOptions>;

export function resolveRetry(o: RetryOptions = {}): ResolvedRetry {
  return { attempts: Math.max(1, o.attempts ?? 4), baseDelayMs: o.baseDelayMs ?? 200, maxDelayMs: o.maxDelayMs ?? 10_000, maxRetryAfterMs: o.maxRetryAfterMs ?? 60_000 };
}

/** The delay before retry number `retry` (1-based): uniformly random in [d/2, d], d = base * 2^(retry-1) capped. */
export function backoffDelay(retry: number, o: ResolvedRetry): number {
  const d = Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** Math.max(0, retry - 1));
  return d / 2 + Math.random() * (d / 2);
}

/** `Retry-After` as milliseconds from now: delta-seconds or an HTTP date; undefined when absent or malformed. */
export function parseRetryAfter(v: string | undefined, now = Date.now()): number | undefined {
  if (v === undefined) return undefined;
  const s = v.trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** Statuses worth another attempt: 429 and the transient 5xx (500, 502, 503, 504). */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ENETUNREACH', 'EHOSTUNREACH', 'EAI_AGAIN', 'ECONNABORTED', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE']);

/** Errors of the connection (not of our code or the caller's abort) that a new attempt may not meet. */
export function isRetryableNetworkError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e.name === 'NetworkError') return true;
  if (e.name === 'AbortError') return false;
  if (e.name === 'TimeoutError') return true;
  const code = (e as NodeJS.ErrnoException).code;
  if (code && NETWORK_CODES.has(code)) return true;
  return /socket hang up|aborted|premature close/i.test(e.message);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((ok, fail) => {
    if (signal?.aborted) return fail(signal.reason as Error);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      ok();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      fail(signal!.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
