/**
 * Slow and abusive clients: slowloris heads, silent and idle connections, bodies that stall mid-upload,
 * uploads that are slow but keep moving, a connection cap, and thousands of open upload sessions. The limits
 * are set low through `REGISTRY_HTTP_*` overrides so the test runs in seconds; the defaults are the same
 * mechanisms with production values (docs/operations.md).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { req, sha256 } from '../helpers/oci.ts';
import { pick, report } from './mode.ts';

const figures: Record<string, unknown> = {};

const TIMEOUTS = {
  REGISTRY_HTTP_TIMEOUTS_HEADER: '1s',
  REGISTRY_HTTP_TIMEOUTS_IDLE: '1s',
  REGISTRY_HTTP_TIMEOUTS_STALL: '2s',
};

interface RawConn {
  socket: Socket;
  /** Everything the server sent. */
  received(): string;
  /** Resolves with the milliseconds from open to close. */
  closed: Promise<number>;
}

function open(port: number): Promise<RawConn> {
  return new Promise((ok, fail) => {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => undefined);
    const closed = new Promise<number>((done) => socket.once('close', () => done(Date.now() - started)));
    socket.once('connect', () => ok({ socket, received: () => Buffer.concat(chunks).toString('latin1'), closed }));
    socket.once('error', fail);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The registry answers promptly while it is being abused. */
async function stillServes(base: string, n = 20): Promise<number> {
  const started = Date.now();
  for (let i = 0; i < n; i++) {
    const r = await req(`${base}/v2/`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(r.status, 200);
  }
  return Date.now() - started;
}

async function startUpload(base: string, name: string): Promise<string> {
  const r = await req(`${base}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  assert.equal(r.status, 202, r.body.toString());
  return new URL(r.headers.get('location')!, base).toString();
}

describe('reliability: slow and abusive clients', { timeout: 180_000 }, () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startBerth({ env: TIMEOUTS });
  });
  after(async () => {
    await reg?.stop();
    report('slow-clients', figures);
  });

  it('slowloris heads and silent connections are closed after the header timeout; others are served meanwhile', async () => {
    const n = pick(100, 500);
    const conns = await Promise.all(Array.from({ length: n }, () => open(reg.port)));
    const drip: NodeJS.Timeout[] = [];
    conns.forEach((c, i) => {
      if (i % 2 === 1) return; // odd ones stay silent
      c.socket.write('GET /v2/ HTTP/1.1\r\nHost: x\r\n');
      const t = setInterval(() => c.socket.writable && c.socket.write(`X-Drip-${i}: a\r\n`), 200);
      drip.push(t);
    });
    const servedMs = await stillServes(reg.url);
    const closedAfter = await Promise.all(conns.map((c) => c.closed));
    drip.forEach(clearInterval);
    // Each one is cut off by the 1 s deadline (checked every 250 ms), not by anything the client does.
    assert.ok(Math.max(...closedAfter) < 15_000, `closed after ${Math.max(...closedAfter)} ms`);
    assert.ok(Math.min(...closedAfter) >= 900, `closed too early: ${Math.min(...closedAfter)} ms`);
    for (const c of conns) assert.ok(c.received() === '' || c.received().startsWith('HTTP/1.1 408'), c.received().slice(0, 80));
    figures.slowloris = { connections: n, closedWithinMs: Math.max(...closedAfter), normalRequestsMs: servedMs };
  });

  it('a kept-alive connection is closed after the idle timeout', async () => {
    const c = await open(reg.port);
    c.socket.write('GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n');
    const ms = await c.closed;
    assert.match(c.received(), /^HTTP\/1\.1 200/);
    assert.ok(ms >= 900 && ms < 15_000, `idle connection closed after ${ms} ms`);
    figures.idleClosedMs = ms;
  });

  it('a request that pauses longer than the idle timeout but less than the stall timeout is not cut off', async () => {
    // idle 1 s, stall 2 s: a pause of 1.5 s inside a body is a stall in progress, not an idle connection.
    const name = 'slow/paused';
    const data = randomBytes(64 * 1024);
    const location = new URL(await startUpload(reg.url, name));
    const c = await open(reg.port);
    c.socket.write(
      `PATCH ${location.pathname}${location.search} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\n\r\n`,
    );
    c.socket.write(data.subarray(0, 1024));
    await sleep(1_500);
    c.socket.write(data.subarray(1024));
    const deadline = Date.now() + 10_000;
    while (!/\r\n\r\n/.test(c.received()) && Date.now() < deadline) await sleep(20);
    assert.match(c.received(), /^HTTP\/1\.1 202/);
    // Then, idle, the same connection is closed by the idle timeout.
    const ms = await c.closed;
    assert.ok(ms >= 1_500 + 900, `closed after ${ms} ms`);
  });

  it('an upload body that stalls is cut off; the upload resumes from what reached storage', async () => {
    const name = 'slow/stalled';
    const data = randomBytes(1024 * 1024);
    const digest = sha256(data);
    const location = new URL(await startUpload(reg.url, name));
    const c = await open(reg.port);
    const sent = 256 * 1024;
    c.socket.write(
      `PATCH ${location.pathname}${location.search} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\n\r\n`,
    );
    c.socket.write(data.subarray(0, sent));
    const ms = await c.closed;
    assert.ok(ms >= 1_900 && ms < 20_000, `stalled upload cut off after ${ms} ms`);
    // Bytes that reached storage are kept (those still gathering for a batched write are not): the client
    // resumes from the offset the registry reports, a prefix of what it sent.
    const status = await req(location.toString());
    assert.equal(status.status, 204);
    const range = /^0-(\d+)$/.exec(status.headers.get('range') ?? '');
    assert.ok(range, `upload status Range ${status.headers.get('range')}`);
    const have = Number(range[1]) === 0 ? 0 : Number(range[1]) + 1;
    assert.ok(have <= sent, `the registry reports ${have} bytes, ${sent} were sent`);
    const rest = await req(location.toString(), {
      method: 'PATCH',
      body: data.subarray(have),
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${have}-${data.length - 1}` },
    });
    assert.equal(rest.status, 202, rest.body.toString());
    const done = new URL(rest.headers.get('location')!, reg.url);
    done.searchParams.set('digest', digest);
    const put = await req(done.toString(), { method: 'PUT' });
    assert.equal(put.status, 201, put.body.toString());
    const got = await req(`${reg.url}/v2/${name}/blobs/${digest}`);
    assert.equal(sha256(got.body), digest);
    figures.stalledUploadCutMs = ms;
  });

  it('a slow upload that keeps moving is never cut off, however long it takes', async () => {
    const name = 'slow/steady';
    const pieces = pick(30, 150);
    const piece = 2048;
    const data = randomBytes(pieces * piece);
    const digest = sha256(data);
    const location = new URL(await startUpload(reg.url, name));
    location.searchParams.set('digest', digest);
    const c = await open(reg.port);
    const started = Date.now();
    // A monolithic PUT whose body trickles in far longer than every timeout (1 s, 1 s, 2 s) together.
    c.socket.write(`PUT ${location.pathname}${location.search} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\n\r\n`);
    for (let i = 0; i < pieces; i++) {
      c.socket.write(data.subarray(i * piece, (i + 1) * piece));
      await sleep(200);
    }
    while (!/\r\n\r\n/.test(c.received()) && !c.socket.destroyed) await sleep(20);
    const took = Date.now() - started;
    assert.match(c.received(), /^HTTP\/1\.1 201/, c.received().slice(0, 300));
    c.socket.destroy();
    assert.ok(took > 4_000, `the upload took ${took} ms, longer than every timeout`);
    const got = await req(`${reg.url}/v2/${name}/blobs/${digest}`);
    assert.equal(sha256(got.body), digest);
    figures.slowUploadMs = took;
  });

  it('thousands of open upload sessions cost no memory, stay usable, and are purged', async () => {
    // Its own server: purging every 2 s of sessions older than 3 s would also remove the other tests' uploads.
    const purger = await startBerth({
      env: {
        REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'true',
        REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE: '3s',
        REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL: '2s',
      },
    });
    try {
      const sessions = pick(2000, 10_000);
      const name = 'slow/sessions';
      const rssBefore = rss(purger.proc.pid!);
      const locations: string[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < sessions) {
            next++;
            locations.push(await startUpload(purger.url, name));
          }
        }),
      );
      const rssAfter = rss(purger.proc.pid!);
      const uploads = join(purger.root, 'docker/registry/v2/repositories', name, '_uploads');
      // Some may already be purged if creating them took longer than the age.
      assert.ok(readdirSync(uploads).length > 0);
      // Any of them can still be completed.
      const b = randomBytes(1000);
      for (const loc of [locations[sessions - 1]!, locations[sessions - 2]!]) {
        const u = new URL(loc);
        u.searchParams.set('digest', sha256(b));
        const r = await req(u.toString(), { method: 'PUT', body: b });
        assert.equal(r.status, 201, r.body.toString());
      }
      await stillServes(purger.url);
      // Sessions hold no memory in the server: growth stays far below a few hundred bytes per session.
      const grownMiB = (rssAfter - rssBefore) / 1024 / 1024;
      assert.ok(grownMiB < 64, `RSS grew ${grownMiB.toFixed(1)} MiB for ${sessions} sessions`);
      // Upload purging removes the abandoned ones.
      const deadline = Date.now() + 60_000;
      while (existsSync(uploads) && readdirSync(uploads).length > 0 && Date.now() < deadline) await sleep(250);
      const left = existsSync(uploads) ? readdirSync(uploads).length : 0;
      assert.equal(left, 0, `${left} abandoned sessions left after purging`);
      figures.uploadSessions = { sessions, rssGrowthMiB: Number(grownMiB.toFixed(1)), purged: true };
    } finally {
      await purger.stop();
    }
  });

  it('http.limits.maxconnections turns away connections above the cap and serves again below it', async () => {
    const capped = await startBerth({ env: { REGISTRY_HTTP_LIMITS_MAXCONNECTIONS: '20', REGISTRY_HTTP_TIMEOUTS_HEADER: '2s' } });
    try {
      const held = await Promise.all(Array.from({ length: 20 }, () => open(capped.port)));
      // Let the server accept all twenty before the next one arrives.
      await sleep(300);
      const extra = await open(capped.port);
      const extraClosed = await Promise.race([extra.closed.then(() => true), sleep(1_500).then(() => false)]);
      assert.ok(extraClosed, 'the 21st connection is closed at once');
      assert.equal(extra.received(), '');
      for (const h of held) h.socket.destroy();
      await Promise.all(held.map((h) => h.closed));
      await sleep(100);
      await stillServes(capped.url, 5);
      figures.maxConnections = { cap: 20, turnedAway: 1 };
    } finally {
      await capped.stop();
    }
  });

  it('oversized heads get 431 and too many headers are refused, without a 5xx', async () => {
    const big = await req(`${reg.url}/v2/`, { headers: { 'X-Big': 'a'.repeat(20_000) } }).catch(() => undefined);
    assert.equal(big?.status ?? 431, 431);
    const c = await open(reg.port);
    c.socket.write(`GET /v2/ HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 2000 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`);
    await c.closed;
    const status = /^HTTP\/1\.1 (\d+)/.exec(c.received())?.[1];
    assert.ok(status === undefined || Number(status) < 500, c.received().slice(0, 100));
    await stillServes(reg.url, 3);
  });
});

function rss(pid: number): number {
  const status = readFileSyncSafe(`/proc/${pid}/status`);
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

function readFileSyncSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
