/**
 * Request-rate load through external generators: Debian's `wrk` for GET (light, C, epoll) and `hey` for
 * HEAD (`wrk` waits for a body after a HEAD response and hangs). Both keep connections alive.
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';

export interface LoadResult {
  tool: 'wrk' | 'hey';
  /** Completed requests per second. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Responses with an unexpected status, plus transport errors. */
  errors: number;
  /** What the errors were, when any. */
  errorDetail?: string;
}

export interface LoadOptions {
  connections: number;
  /** Seconds. */
  duration: number;
  headers?: Record<string, string>;
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((ok, fail) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      fail(new Error(`${cmd} did not finish within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    p.once('error', (e) => {
      clearTimeout(timer);
      fail(e);
    });
    p.once('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) fail(new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${err || out}`));
      else ok(out);
    });
  });
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function wrkMs(s: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(s.trim());
  if (!m) throw new Error(`wrk: cannot parse latency ${s}`);
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

export function parseWrk(out: string): LoadResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out);
  const p99 = /^\s+99%\s+(\S+)/m.exec(out);
  const total = /(\d+) requests in/.exec(out);
  if (!rps || !p50 || !p99 || !total) throw new Error(`cannot parse wrk output:\n${out}`);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const sockErrors = sock ? sock.slice(1, 5).reduce((a, b) => a + Number(b), 0) : 0;
  const errors = (non2xx ? Number(non2xx[1]) : 0) + sockErrors;
  const r: LoadResult = { tool: 'wrk', rps: Number(rps[1]), p50Ms: wrkMs(p50[1]!), p99Ms: wrkMs(p99[1]!), requests: Number(total[1]), errors };
  if (errors > 0) r.errorDetail = [non2xx?.[0], sock?.[0]].filter(Boolean).join('; ');
  return r;
}

/** GET load with wrk (one thread per CPU, `--latency` for the percentiles). */
export async function wrk(url: string, o: LoadOptions): Promise<LoadResult> {
  const threads = Math.max(1, Math.min(availableParallelism(), o.connections));
  const args = ['-t', String(threads), '-c', String(o.connections), '-d', `${Math.max(1, Math.round(o.duration))}s`, '--latency', '--timeout', '10s'];
  for (const [k, v] of Object.entries(o.headers ?? {})) args.push('-H', `${k}: ${v}`);
  args.push(url);
  return parseWrk(await run('wrk', args, (o.duration + 60) * 1000));
}

export function parseHey(out: string, expectStatus: number): LoadResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /50%+ in ([\d.]+) secs/.exec(out);
  const p99 = /99%+ in ([\d.]+) secs/.exec(out);
  if (!rps || !p50 || !p99) throw new Error(`cannot parse hey output:\n${out}`);
  let ok = 0;
  let bad = 0;
  const statusBlock = /Status code distribution:\n([\s\S]*?)(?:\n\n|$)/.exec(out)?.[1] ?? '';
  for (const m of statusBlock.matchAll(/\[(\d+)\]\s+(\d+) responses/g)) {
    if (Number(m[1]) === expectStatus) ok += Number(m[2]);
    else bad += Number(m[2]);
  }
  // With -z, requests in flight when the time is up are cancelled and listed as errors: not the server's fault.
  let transport = 0;
  const details: string[] = [];
  const errBlock = /Error distribution:\n([\s\S]*?)(?:\n\n|$)/.exec(out)?.[1] ?? '';
  for (const m of errBlock.matchAll(/\[(\d+)\]\s+(.*)/g)) {
    if (/context deadline exceeded|request canceled|Client\.Timeout/.test(m[2]!) && !/Client\.Timeout exceeded while awaiting headers/.test(m[2]!)) continue;
    transport += Number(m[1]);
    details.push(`${m[1]}× ${m[2]!.slice(0, 160)}`);
  }
  if (bad > 0) details.unshift(`${bad} responses not ${expectStatus}: ${statusBlock.trim().replace(/\s+/g, ' ')}`);
  const r: LoadResult = { tool: 'hey', rps: Number(rps[1]), p50Ms: Number(p50[1]) * 1000, p99Ms: Number(p99[1]) * 1000, requests: ok + bad, errors: bad + transport };
  if (details.length > 0) r.errorDetail = details.join('; ');
  return r;
}

/** Load with hey (used for HEAD). */
export async function hey(url: string, method: 'GET' | 'HEAD', o: LoadOptions): Promise<LoadResult> {
  const args = ['-z', `${Math.max(100, Math.round(o.duration * 1000))}ms`, '-c', String(o.connections), '-m', method, '-t', '10'];
  for (const [k, v] of Object.entries(o.headers ?? {})) args.push('-H', `${k}: ${v}`);
  args.push(url);
  return parseHey(await run('hey', args, (o.duration + 60) * 1000), 200);
}

/** HEAD goes through hey, everything else through wrk. */
export function load(url: string, method: 'GET' | 'HEAD', o: LoadOptions): Promise<LoadResult> {
  return method === 'HEAD' ? hey(url, 'HEAD', o) : wrk(url, o);
}

/**
 * One GET read and discarded by `curl`, timed by curl itself (connection to last byte). The harness's Node
 * client reads a stream at ~350–700 MB/s on a 2-core machine shared with the server, which made it, not the
 * server, the limit of every pull; curl reads in C without a parser per chunk, as `docker`'s and
 * `containerd`'s Go clients do.
 */
export async function curlDownload(url: string, expectedBytes: number, timeoutMs = 120_000): Promise<{ bytes: number; seconds: number }> {
  const out = await run('curl', ['--silent', '--show-error', '--output', '/dev/null', '--write-out', '%{http_code} %{size_download} %{time_total}', url], timeoutMs);
  const [status, bytes, seconds] = out.trim().split(/\s+/).map(Number);
  if (status !== 200) throw new Error(`curl GET ${url}: status ${status}`);
  if (bytes !== expectedBytes) throw new Error(`curl GET ${url}: received ${bytes} bytes, expected ${expectedBytes}`);
  if (!(seconds! > 0)) throw new Error(`curl GET ${url}: no time measured (${out.trim()})`);
  return { bytes: bytes!, seconds: seconds! };
}
