/**
 * The bare Node server: the least a registry must do, as a ceiling for Berth.
 *
 *   PUT|POST /push/…[?fsync=1][&digest=sha256:…]  sha256 of the body while writing it to a fresh file in
 *                                                 ~1 MiB writev batches, one write in flight while the
 *                                                 next batch arrives (fsync before answering with
 *                                                 ?fsync=1); 201 + digest.
 *   GET /stream?size=N                             N bytes of a repeated 1 MiB buffer (loopback ceiling).
 *   GET /                                          200 (readiness).
 *
 * Usage: node --import tsx bench/bare-server.ts <directory>   (prints {"port":N} when listening)
 */
import { createHash, randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { PATTERN, PATTERN_SIZE, drained } from './data.ts';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: bare-server.ts <directory>\n');
  process.exit(2);
}

/** Batches the body into ~1 MiB writev calls on a file handle, one write in flight while receiving. */
async function push(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): Promise<void> {
  const file = join(dir!, randomUUID());
  const h = await fsp.open(file, 'w');
  const hash = createHash('sha256');
  let size = 0;
  try {
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let inflight: Promise<void> | undefined;
    const flush = async (): Promise<void> => {
      if (inflight) await inflight;
      const bufs = batch;
      const n = batchBytes;
      batch = [];
      batchBytes = 0;
      inflight = h.writev(bufs).then((r) => {
        if (r.bytesWritten !== n) throw new Error(`short write: ${r.bytesWritten} of ${n}`);
      });
    };
    for await (const chunk of req) {
      const b = chunk as Buffer;
      hash.update(b);
      size += b.length;
      batch.push(b);
      batchBytes += b.length;
      if (batchBytes >= 1024 * 1024) await flush();
    }
    if (batchBytes > 0) await flush();
    if (inflight) await inflight;
    if (query.get('fsync') === '1') await h.sync();
    const digest = `sha256:${hash.digest('hex')}`;
    const expected = query.get('digest');
    const ok = expected === null || expected === digest;
    res.writeHead(ok ? 201 : 400, { 'Docker-Content-Digest': digest, 'Content-Length': 0, 'X-Size': size });
    res.end();
  } finally {
    await h.close();
    await fsp.rm(file, { force: true });
  }
}

async function stream(res: ServerResponse, size: number): Promise<void> {
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': size });
  let left = size;
  while (left > 0) {
    const n = Math.min(left, PATTERN_SIZE);
    left -= n;
    if (!res.write(n === PATTERN_SIZE ? PATTERN : PATTERN.subarray(0, n))) await drained(res);
  }
  res.end();
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const fail = (e: unknown): void => {
    if (!res.headersSent) {
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(String(e));
    } else res.destroy();
  };
  if ((req.method === 'PUT' || req.method === 'POST') && url.pathname.startsWith('/push')) {
    push(req, res, url.searchParams).catch(fail);
  } else if (req.method === 'GET' && url.pathname === '/stream') {
    req.resume();
    stream(res, Number(url.searchParams.get('size') ?? 0)).catch(fail);
  } else {
    req.resume();
    res.writeHead(req.url === '/' ? 200 : 404, { 'Content-Length': 0 });
    res.end();
  }
});
server.requestTimeout = 0;
server.keepAliveTimeout = 65_000;
server.listen({ port: 0, host: '127.0.0.1', backlog: 1024 }, () => {
  const a = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof a === 'object' && a ? a.port : 0 })}\n`);
});
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
