/**
 * An HTTP front for tests: answers the next requests matching a predicate with scripted failures (503, 429
 * with Retry-After, 401 with a challenge, ...), and proxies everything else to a real registry. A fixture
 * between the client and a real server, not a mock of the client.
 */
import { createServer, request, type IncomingMessage } from 'node:http';

export interface Failure {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  /** Only requests for which this returns true take this failure (default: any). */
  when?: (req: IncomingMessage) => boolean;
}

export interface FlakyHttp {
  url: string;
  host: string;
  /** Every request seen: `METHOD path status`. */
  log: string[];
  /** Queue failures; each is used once, in order. */
  fail(...f: Failure[]): void;
  close(): Promise<void>;
}

export async function startFlakyHttp(target: string): Promise<FlakyHttp> {
  const t = new URL(target);
  const queue: Failure[] = [];
  const log: string[] = [];
  const server = createServer((req, res) => {
    const i = queue.findIndex((f) => !f.when || f.when(req));
    if (i >= 0) {
      const f = queue.splice(i, 1)[0]!;
      log.push(`${req.method} ${req.url} ${f.status}`);
      req.resume();
      const body = f.body ?? JSON.stringify({ errors: [{ code: f.status === 429 ? 'TOOMANYREQUESTS' : f.status === 401 ? 'UNAUTHORIZED' : 'UNAVAILABLE', message: 'scripted failure' }] });
      res.writeHead(f.status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...f.headers });
      res.end(body);
      return;
    }
    const up = request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      log.push(`${req.method} ${req.url} ${ur.statusCode}`);
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    log,
    fail: (...f) => queue.push(...f),
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}
