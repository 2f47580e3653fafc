/** Small HTTP helpers: responses, OCI error rendering (the ONE place), bounded body reads, ranges. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { OciError, isOciError } from '../spec/errors.ts';
import { InvalidPathError } from '../storage/driver.ts';

export type Headers = Record<string, string | number | string[]>;

export function send(res: ServerResponse, status: number, headers: Headers, body?: string | Buffer): void {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { ...headers, 'Content-Length': b ? b.length : (headers['Content-Length'] ?? 0) });
  res.end(b);
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Headers = {}, head = false): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers, 'Content-Length': body.length });
  res.end(head ? undefined : body);
}

/** Maps any error to an OciError; unknown errors are logged and become UNKNOWN (500). */
export function toOciError(e: unknown, log: Logger): OciError {
  if (isOciError(e)) return e;
  if (e instanceof InvalidPathError) return new OciError('NAME_INVALID', { reason: 'invalid path' });
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    log.error({ err: e }, 'storage full');
    return new OciError('UNAVAILABLE', { reason: 'storage is full' });
  }
  if (code === 'EMFILE' || code === 'ENFILE' || code === 'EIO' || code === 'ETIMEDOUT') {
    log.error({ err: e }, 'storage unavailable');
    return new OciError('UNAVAILABLE', { reason: 'storage unavailable' });
  }
  log.error({ err: e }, 'unexpected error');
  return new OciError('UNKNOWN');
}

/** Request bodies up to this size are read and discarded before an error answer, so the client sees it. */
const DRAIN_LIMIT = 64 * 1024 * 1024;

/** Renders an error as `{"errors":[…]}` with the status from the table. */
export function sendError(req: IncomingMessage, res: ServerResponse, e: unknown, log: Logger): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (res.destroyed || code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ABORT_ERR') {
    // The client went away: nobody to answer, nothing unexpected to report.
    log.debug({ code, method: req.method, path: req.url?.split('?')[0] }, 'client closed the connection');
    res.destroy();
    return;
  }
  const err = toOciError(e, log);
  const headers: Headers = { ...err.headers };
  const answer = (): void => {
    if (!res.headersSent && !res.destroyed) sendJson(res, err.status, err.toBody(), headers, req.method === 'HEAD');
  };
  if (req.complete || req.readableEnded) return answer();
  const cl = Number(req.headers['content-length']);
  if (Number.isFinite(cl) && cl <= DRAIN_LIMIT && !req.destroyed) {
    // Read the rest of a small unread body so the client is not cut off mid-send (EPIPE) before our answer.
    req.once('end', answer);
    req.once('error', () => res.destroy());
    req.resume();
    return;
  }
  // A body we will not read would desynchronise a kept-alive connection: answer, then close it.
  headers.Connection = 'close';
  answer();
  req.resume();
}

/** Reads a whole body up to `limit` bytes; above it throws the given error without reading further. */
export async function readBody(req: IncomingMessage, limit: number, tooLarge: () => OciError): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > limit) throw tooLarge();
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks, n);
}

/** Whether the request carries a body (a non-zero Content-Length or chunked encoding). */
export function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  if (cl !== undefined) return Number(cl) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}

export interface ByteRange {
  start: number;
  end: number;
}

/**
 * Parses a single `Range: bytes=a-b | a- | -n` against `size`. Returns undefined for no header;
 * throws RANGE_INVALID (416 with `Content-Range: bytes * /size`) when malformed, multiple or unsatisfiable.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const fail = (): OciError => new OciError('RANGE_INVALID', { range: header.slice(0, 100), size }, { 'Content-Range': `bytes */${size}` });
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) throw fail();
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw fail();
    start = Math.max(size - suffix, 0);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) throw fail();
  }
  if (!Number.isSafeInteger(start) || start >= size || end < start) throw fail();
  return { start, end };
}

/** Parses a `Content-Range: <start>-<end>` of an upload chunk. */
export function parseContentRange(header: string | undefined): ByteRange | undefined {
  if (header === undefined) return undefined;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!m) throw new OciError('RANGE_INVALID', { contentRange: header.slice(0, 100) });
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) {
    throw new OciError('RANGE_INVALID', { contentRange: header.slice(0, 100) });
  }
  return { start, end };
}

/** Parses a pagination `n`; undefined when absent; PAGINATION_NUMBER_INVALID when not a non-negative integer. */
export function parseN(v: string | null): number | undefined {
  if (v === null) return undefined;
  if (!/^\d{1,9}$/.test(v)) throw new OciError('PAGINATION_NUMBER_INVALID', { n: v.slice(0, 50) });
  return Number(v);
}
