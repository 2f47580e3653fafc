/**
 * A light HTTP load client for the reliability suites: timed requests per kind, failures kept with their
 * reason (never thrown), latency percentiles, and a sampler of a process's memory and open descriptors.
 * Requests go through node:http with one keep-alive agent without a per-host socket limit.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';

export interface Response {
  status: number;
  headers: Headers;
  body: Buffer;
}

/** A failed request kept for the report: which kind, and why. */
export interface Failure {
  kind: string;
  reason: string;
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

const round = (n: number): number => Math.round(n * 10) / 10;

export class Stats {
  private readonly latencies = new Map<string, number[]>();
  readonly failures: Failure[] = [];
  failureCount = 0;
  /** Requests started (answered or not). */
  attempts = 0;
  inFlight = 0;
  maxInFlight = 0;

  record(kind: string, ms: number): void {
    let a = this.latencies.get(kind);
    if (!a) this.latencies.set(kind, (a = []));
    a.push(ms);
  }

  fail(kind: string, reason: string): void {
    this.failureCount++;
    // Keep the first few reasons only: a systematic failure would otherwise fill memory and the log.
    if (this.failures.length < 50) this.failures.push({ kind, reason });
  }

  get requests(): number {
    let n = 0;
    for (const a of this.latencies.values()) n += a.length;
    return n;
  }

  /** p50/p90/p99/max in milliseconds per kind and over all requests. */
  summary(): Record<string, { n: number; p50: number; p90: number; p99: number; max: number }> {
    const out: Record<string, { n: number; p50: number; p90: number; p99: number; max: number }> = {};
    const all: number[] = [];
    const one = (a: number[]) => {
      const s = Float64Array.from(a).sort();
      return { n: s.length, p50: round(percentile(s, 50)), p90: round(percentile(s, 90)), p99: round(percentile(s, 99)), max: round(s[s.length - 1] ?? 0) };
    };
    for (const [k, a] of [...this.latencies].sort(([x], [y]) => (x < y ? -1 : 1))) {
      out[k] = one(a);
      for (const v of a) all.push(v);
    }
    out.all = one(all);
    return out;
  }
}

/** Thrown inside a check to mark the request failed with a reason. */
export class CheckFailed extends Error {}

export function check(cond: unknown, reason: string): asserts cond {
  if (!cond) throw new CheckFailed(reason);
}

/** Keep-alive connections without a per-host limit: N concurrent loops hold N requests on N sockets. */
export const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 });

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer;
  /** Hash the body as it streams instead of keeping it (large blobs). */
  hashBody?: boolean;
  timeoutMs?: number;
}

export type Answer = Response & { digest?: string; size?: number };

/** One request over {@link agent}; rejects on a network error or a body shorter than announced. */
export function request(url: string, o: RequestOptions = {}): Promise<Answer> {
  return new Promise((ok, fail) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.body) headers['Content-Length'] = String(o.body.length);
    const req = http.request(url, { agent, method: o.method ?? 'GET', headers }, (res) => {
      // Only a successful body is hashed; an error's JSON is kept for its code.
      const h = o.hashBody && res.statusCode! >= 200 && res.statusCode! < 300 ? createHash('sha256') : undefined;
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (h) h.update(c);
        else chunks.push(c);
      });
      res.on('error', fail);
      res.on('aborted', () => fail(new Error(`response aborted after ${size} bytes`)));
      res.on('end', () => {
        if (!res.complete) return fail(new Error(`response truncated after ${size} bytes`));
        const hs = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) hs.set(k, Array.isArray(v) ? v.join(', ') : v);
        ok({ status: res.statusCode!, headers: hs, body: h ? Buffer.alloc(0) : Buffer.concat(chunks), ...(h ? { digest: `sha256:${h.digest('hex')}`, size } : {}) });
      });
    });
    req.setTimeout(o.timeoutMs ?? 120_000, () => req.destroy(new Error(`no activity for ${o.timeoutMs ?? 120_000} ms`)));
    req.on('error', fail);
    req.end(o.body);
  });
}

/**
 * One timed request over {@link agent} (node:http: several times cheaper per request than fetch, which keeps
 * the client's share of the 2 cores small). The body is read whole, or hashed as it streams with `hashBody`
 * so large blobs are never held; a body shorter than its Content-Length fails the request. `verify` throws
 * {@link CheckFailed} (via {@link check}) to mark the request failed. Returns undefined on any failure, which
 * is recorded in `stats`, never thrown.
 */
export async function call(stats: Stats, kind: string, url: string, init: RequestOptions, verify: (r: Answer) => void): Promise<Answer | undefined> {
  const t0 = performance.now();
  stats.attempts++;
  stats.inFlight++;
  if (stats.inFlight > stats.maxInFlight) stats.maxInFlight = stats.inFlight;
  try {
    const out = await request(url, init);
    stats.record(kind, performance.now() - t0);
    verify(out);
    return out;
  } catch (e) {
    const err = e as Error & { code?: string };
    const reason = e instanceof CheckFailed ? err.message : `${err.code ?? err.name}: ${err.message}`;
    stats.fail(kind, `${init.method ?? 'GET'} ${url.replace(/_state=[^&]*/, '_state=…')}: ${reason}`);
    return undefined;
  } finally {
    stats.inFlight--;
  }
}

export function sha256(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** CPU seconds (user + system) `pid` has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 (utime, stime) of proc(5), counted after the command name: indexes 11 and 12 here.
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

/** Samples VmRSS and the number of open descriptors of `pid` every `everyMs` until stopped. */
export function sampleProcess(pid: number, everyMs = 250): { stop(): { peakRssMiB: number; lastRssMiB: number; samples: number; peakFds: number; rssMiB: number[] } } {
  const rss: number[] = [];
  let peakFds = 0;
  const sample = () => {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) rss.push(Number(m[1]) / 1024);
      peakFds = Math.max(peakFds, readdirSync(`/proc/${pid}/fd`).length);
    } catch {
      // The process exited; the test notices elsewhere.
    }
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return { peakRssMiB: round(Math.max(0, ...rss)), lastRssMiB: round(rss[rss.length - 1] ?? 0), samples: rss.length, peakFds, rssMiB: rss };
    },
  };
}

