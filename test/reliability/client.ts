/**
 * A registry client for the reliability suites that records every exchange: status, OCI error code, timeouts,
 * and responses cut off part-way. Each call states which outcomes are legitimate, so a suite can assert that
 * nothing else ever happened.
 */
import { createHash } from 'node:crypto';

export interface Outcome {
  op: string;
  status: number;
  /** The OCI error code of a 4xx/5xx body; 'MALFORMED' when the body is not an OCI error. */
  code?: string;
  headers?: Headers;
  body?: Buffer;
  /** The client gave up (its timeout). */
  timeout?: boolean;
  /** The response began but the connection broke before its body was complete. */
  truncated?: boolean;
  /** No response at all (reset, refused). */
  network?: string;
}

export interface Tally {
  requests: number;
  statuses: Record<string, number>;
  /** Outcomes no rule allowed, with their details (a suite asserts this stays empty). */
  unexpected: string[];
}

export function newTally(): Tally {
  return { requests: 0, statuses: {}, unexpected: [] };
}

export function sha256(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function ociCode(body: Buffer): string {
  try {
    const v = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const e = v.errors?.[0];
    if (Array.isArray(v.errors) && v.errors.length >= 1 && typeof e?.code === 'string' && typeof e.message === 'string') return e.code;
  } catch {
    // not JSON
  }
  return 'MALFORMED';
}

export interface CallOptions extends RequestInit {
  /** Client-side timeout in ms. */
  timeoutMs: number;
  /** Legitimate 4xx answers as `status code`, e.g. `404 BLOB_UNKNOWN`. */
  allow4xx?: string[];
  /** Whether a response may break off after its headers (a blob whose storage read failed part-way). */
  mayTruncate?: boolean;
  /** Whether 5xx answers, timeouts and broken-off bodies are legitimate (storage faults on); default true. */
  allow5xx?: boolean;
  /** The success statuses of this call; any other status below 400 is unexpected. */
  success: number[];
}

/** 5xx codes storage faults may legitimately produce. */
const FAULT_CODES = new Set(['UNAVAILABLE', 'UNKNOWN']);

export async function call(t: Tally, op: string, url: string, o: CallOptions): Promise<Outcome> {
  const { timeoutMs, allow4xx = [], mayTruncate = false, allow5xx = true, success, ...init } = o;
  t.requests++;
  const bump = (k: string): void => {
    t.statuses[k] = (t.statuses[k] ?? 0) + 1;
  };
  const bad = (what: string): void => {
    if (t.unexpected.length < 50) t.unexpected.push(`${op} ${init.method ?? 'GET'} ${url.replace(/^https?:\/\/[^/]+/, '')}: ${what}`);
  };
  let r: Response;
  try {
    r = await fetch(url, { redirect: 'manual', ...init, signal: AbortSignal.timeout(timeoutMs), ...(init.body ? { duplex: 'half' } : {}) } as RequestInit);
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    if (err.name === 'TimeoutError' || err.name === 'AbortError') {
      bump('timeout');
      if (!allow5xx) bad('timed out with faults off');
      return { op, status: 0, timeout: true };
    }
    const why = err.cause?.code ?? err.cause?.message ?? err.message;
    bump(`network:${why}`);
    bad(`no response (${why})`);
    return { op, status: 0, network: why };
  }
  let body: Buffer;
  try {
    body = Buffer.from(await r.arrayBuffer());
  } catch (e) {
    const err = e as Error;
    if (err.name === 'TimeoutError' || err.name === 'AbortError') {
      bump('timeout');
      if (!allow5xx) bad('timed out with faults off');
      return { op, status: r.status, timeout: true };
    }
    bump(`${r.status}:truncated`);
    if (!mayTruncate || !allow5xx || !success.includes(r.status)) bad(`${r.status} response broke off (${err.message})`);
    return { op, status: r.status, truncated: true, headers: r.headers };
  }
  const out: Outcome = { op, status: r.status, headers: r.headers, body };
  if (r.status >= 400) {
    out.code = init.method === 'HEAD' ? 'HEAD' : ociCode(body);
    bump(`${r.status} ${out.code}`);
    if (r.status >= 500) {
      if (!allow5xx) bad(`${r.status} ${out.code} with faults off: ${body.toString('utf8').slice(0, 300)}`);
      else if (out.code !== 'HEAD' && !FAULT_CODES.has(out.code)) bad(`${r.status} with code ${out.code}: ${body.toString('utf8').slice(0, 300)}`);
      else if (out.code !== 'HEAD' && (out.code === 'UNAVAILABLE') !== (r.status === 503)) bad(`${r.status} ${out.code}`);
    } else if (!allow4xx.includes(`${r.status} ${out.code}`) && !(out.code === 'HEAD' && allow4xx.some((a) => a.startsWith(`${r.status} `)))) {
      bad(`${r.status} ${out.code}: ${body.toString('utf8').slice(0, 300)}`);
    }
  } else {
    bump(String(r.status));
    if (!success.includes(r.status)) bad(`unexpected ${r.status}`);
  }
  return out;
}

/** Whether an outcome is a plain success with one of `statuses`. */
export function ok(o: Outcome, ...statuses: number[]): boolean {
  return !o.timeout && !o.truncated && !o.network && statuses.includes(o.status);
}
