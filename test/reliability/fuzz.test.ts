/**
 * Hostile-input fuzz suite (issue 6, "Reliability"). Berth runs as a child process over a storage root that is a
 * subdirectory of a sentinel directory holding canary files; property-based generators (fast-check) and raw
 * sockets send malformed requests in seven categories. Asserted throughout: no 5xx, no hang, no write accepted
 * by mistake, the storage tree equal to its baseline after every batch (sizes, inodes and mtimes; content hashes
 * at the end), nothing created or changed outside the storage root. At the end: the process is alive, answers
 * `GET /v2/` and the seeded images pull with correct digests.
 *
 * Reproduce a failure with `FUZZ_SEED=<seed> node scripts/run-tests.mjs test/reliability/fuzz`: every category
 * derives its seed from that one, and the failing batch is printed request by request.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { startBerth, PROJECT_ROOT, type RunningRegistry } from '../helpers/servers.ts';
import { OCI_INDEX, OCI_MANIFEST, blob, imageManifest, pushBlob, pushImage, putManifest, req as fetchReq, sha256, type Blob } from '../helpers/oci.ts';
import { isRepoName } from '../../src/spec/names.ts';
import { pick, report } from './mode.ts';

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : 0x6e7d;
/** Requests in flight at once within a batch. */
const BATCH = 24;
const MIB = 1024 * 1024;
const PWN = `berth-fuzz-pwned-${process.pid}`;

// ---------------------------------------------------------------------------------------------------------------
// Requests and results

interface Req {
  cat: string;
  method: string;
  path: string;
  headers?: Record<string, string | string[]>;
  body?: Buffer | string;
  /** Raw bytes to write to a fresh socket instead of a well-formed request. */
  raw?: Buffer;
  /** Close our side after writing (the body framing is incomplete or lies about its length). */
  halfClose?: boolean;
  /** A write that must be rejected (4xx or a closed connection): anything else is a bug. */
  mustReject?: boolean;
  /** Send over a raw socket even if http.request could. */
  forceRaw?: boolean;
  /**
   * A `POST …/blobs/uploads/?mount=<digest>&from=<x>` where `x` decodes (as any query value does) to a valid
   * name: a mount that cannot happen falls back to a new upload session (202), which the spec requires. Such
   * sessions are tracked and cancelled, so they are excluded exactly.
   */
  mayStartUpload?: boolean;
}

type Outcome = number | 'closed' | 'timeout' | 'refused';

interface Res {
  status: Outcome;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

const figures = {
  byCategory: {} as Record<string, number>,
  statuses: {} as Record<string, number>,
  closedByServer: 0,
  total: 0,
};

function count(cat: string, status: Outcome): void {
  figures.total++;
  figures.byCategory[cat] = (figures.byCategory[cat] ?? 0) + 1;
  figures.statuses[String(status)] = (figures.statuses[String(status)] ?? 0) + 1;
  if (status === 'closed') figures.closedByServer++;
}

function short(s: string, n = 160): string {
  return s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s;
}

/** A request as a reader can see it: escaped, long parts cut. */
function describe(r: Req): string {
  const body = r.raw ?? r.body;
  const b = body === undefined ? '' : ` body=${JSON.stringify(short(Buffer.from(body).toString('latin1'), 200))}`;
  if (r.raw) return `[${r.cat}] RAW${r.halfClose ? ' (half-closed)' : ''}${b}`;
  const h = r.headers ? ` headers=${short(JSON.stringify(r.headers), 300)}` : '';
  return `[${r.cat}] ${r.method} ${JSON.stringify(short(r.path, 300))}${h}${b}`;
}

let port = 0;
/** Upload sessions legitimately started by a fuzzed request (see `mayStartUpload`), cancelled after each batch. */
const startedUploads: string[] = [];
let uploadsStartedByMountFallback = 0;

async function cancelStartedUploads(): Promise<void> {
  for (const loc of startedUploads.splice(0)) {
    uploadsStartedByMountFallback++;
    assert.doesNotThrow(() => new URL(loc), `Location ${loc} is not a URL`);
    const r = await fetchReq(`${reg.url}${new URL(loc).pathname}${new URL(loc).search}`, { method: 'DELETE' });
    assert.equal(r.status, 204, `cancelling ${loc}`);
  }
}

/** Counterexamples print as requests, not as objects with buffers. */
function printable(r: Req): Req {
  Object.defineProperty(r, fc.toStringMethod, { value: () => describe(r), enumerable: false });
  return r;
}
const agent = new http.Agent({ keepAlive: true, maxSockets: BATCH });

/** Bytes fetch and http.request refuse to put on the wire go over a raw socket. */
function needsRaw(r: Req): boolean {
  if (r.raw || r.forceRaw) return true;
  if (/[^\x21-\x7e]/.test(r.path) || /(^|\/)\.\.?(\/|$)|\\/.test(r.path)) return true;
  for (const v of Object.values(r.headers ?? {})) for (const x of [v].flat()) if (/[^\t\x20-\x7e]/.test(x)) return true;
  return false;
}

function toRaw(r: Req): Buffer {
  if (r.raw) return r.raw;
  const body = r.body === undefined ? undefined : Buffer.from(r.body);
  const lines = [`${r.method} ${r.path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close'];
  for (const [k, v] of Object.entries(r.headers ?? {})) for (const x of [v].flat()) lines.push(`${k}: ${x}`);
  if (body && !Object.keys(r.headers ?? {}).some((k) => k.toLowerCase() === 'content-length')) lines.push(`Content-Length: ${body.length}`);
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body ?? Buffer.alloc(0)]);
}

const HANG_MS = 90_000;

async function sendRaw(bytes: Buffer, halfClose: boolean, isHead: boolean): Promise<Res> {
  // Soak mode opens tens of thousands of connections: a local port shortage is ours, not the server's answer.
  for (let attempt = 0; ; attempt++) {
    const res = await sendRawOnce(bytes, halfClose, isHead);
    const { status } = res;
    if (status !== 'no-port') return { ...res, status };
    if (attempt >= 40) return { ...res, status: 'refused' };
    await new Promise((r) => setTimeout(r, 250));
  }
}

function sendRawOnce(bytes: Buffer, halfClose: boolean, isHead: boolean): Promise<Omit<Res, 'status'> & { status: Outcome | 'no-port' }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (res: Omit<Res, 'status'> & { status: Outcome | 'no-port' }): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(nudge);
      s.destroy();
      resolve(res);
    };
    const parse = (final: boolean): void => {
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      if (end < 0) {
        if (final) {
          const m = /^HTTP\/1\.[01] (\d{3})/.exec(all.toString('latin1'));
          finish({ status: m ? Number(m[1]) : 'closed', body: all.toString('latin1', 0, 500), headers: {} });
        }
        return;
      }
      const head = all.toString('latin1', 0, end);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      if (!m) return finish({ status: 'closed', body: head.slice(0, 500), headers: {} });
      const status = Number(m[1]);
      if (status === 100 && !final) {
        chunks.splice(0, chunks.length, all.subarray(end + 4));
        return parse(false);
      }
      const headers: Record<string, string> = {};
      for (const l of head.split('\r\n').slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      const cl = Number(headers['content-length'] ?? 0);
      const body = all.subarray(end + 4);
      if (final || isHead || body.length >= cl) finish({ status, body: body.toString('utf8', 0, Math.min(body.length, 2000)), headers });
    };
    // A server still waiting for a body we never send gets our FIN after a while; a real hang fails the suite.
    const nudge = setTimeout(() => s.end(), 15_000);
    const timer = setTimeout(() => finish({ status: 'timeout', body: Buffer.concat(chunks).toString('latin1', 0, 500), headers: {} }), HANG_MS);
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      parse(false);
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ECONNREFUSED') finish({ status: 'refused', body: '', headers: {} });
      else if (e.code === 'EADDRNOTAVAIL' || e.code === 'EADDRINUSE') finish({ status: 'no-port', body: '', headers: {} });
      else parse(true);
    });
    s.on('close', () => parse(true));
    s.on('connect', () => {
      s.write(bytes, () => {
        if (halfClose) s.end();
      });
    });
  });
}

function sendHttp(r: Req): Promise<Res> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (res: Res): void => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        resolve(res);
      }
    };
    const q = http.request({ host: '127.0.0.1', port, method: r.method, path: r.path, headers: r.headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        if (n < 4000) chunks.push(c);
        n += c.length;
      });
      res.on('end', () => finish({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8', 0, 2000), headers: res.headers }));
      res.on('error', () => finish({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8', 0, 2000), headers: res.headers }));
    });
    const timer = setTimeout(() => {
      finish({ status: 'timeout', body: '', headers: {} });
      q.destroy();
    }, HANG_MS);
    q.on('error', (e: NodeJS.ErrnoException) => finish({ status: e.code === 'ECONNREFUSED' ? 'refused' : 'closed', body: String(e.message), headers: {} }));
    q.end(r.body);
  });
}

async function send(r: Req): Promise<Res> {
  const res = needsRaw(r) ? await sendRaw(toRaw(r), r.halfClose ?? false, r.method === 'HEAD') : await sendHttp(r);
  count(r.cat, res.status);
  return res;
}

/** Fails on what is never acceptable for any request: a 5xx, a hang, a dead server, an accepted hostile write. */
function judge(r: Req, res: Res): string | undefined {
  const s = res.status;
  if (s === 'timeout') return `no answer within ${HANG_MS / 1000} s (hang)`;
  if (s === 'refused') return 'connection refused: the server is down';
  if (typeof s === 'number' && s >= 500) return `status ${s}: ${short(res.body, 600)}`;
  if (r.mayStartUpload && s === 202 && typeof res.headers['docker-upload-uuid'] === 'string' && typeof res.headers.location === 'string') {
    startedUploads.push(res.headers.location);
    return undefined;
  }
  if (r.mustReject && typeof s === 'number' && s < 400) return `a hostile write was accepted with ${s}: ${short(res.body, 300)}`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Trees

interface Entry {
  kind: 'dir' | 'file' | 'link' | 'other';
  size: number;
  ino: number;
  mtimeMs: number;
  hash?: string;
}

function snapshot(dir: string, hashes: boolean, skip?: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const walk = (abs: string, rel: string): void => {
    for (const name of readdirSync(abs).sort()) {
      const a = join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      if (a === skip) continue;
      const st = lstatSync(a);
      const kind = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'link' : 'other';
      // A directory's mtime changes with any create-then-remove in it; only its existence is compared.
      const e: Entry = { kind, size: kind === 'dir' ? 0 : st.size, ino: st.ino, mtimeMs: kind === 'dir' ? 0 : st.mtimeMs };
      if (hashes && kind === 'file' && st.size <= 8 * MIB) e.hash = createHash('sha256').update(readFileSync(a)).digest('hex');
      out.set(r, e);
      if (kind === 'dir') walk(a, r);
    }
  };
  walk(dir, '');
  return out;
}

function diff(before: Map<string, Entry>, after: Map<string, Entry>): string[] {
  const out: string[] = [];
  for (const [p, e] of after) {
    const b = before.get(p);
    if (!b) out.push(`created ${p} (${e.kind}, ${e.size} bytes)`);
    else if (b.kind !== e.kind || b.size !== e.size || b.ino !== e.ino || b.mtimeMs !== e.mtimeMs || (b.hash && e.hash && b.hash !== e.hash)) {
      out.push(`changed ${p} (${b.kind} ${b.size} bytes -> ${e.kind} ${e.size} bytes)`);
    }
  }
  for (const p of before.keys()) if (!after.has(p)) out.push(`removed ${p}`);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Setup: sentinel directory, canaries, Berth, seeded images

let reg: RunningRegistry;
let sentinel: string;
let root: string;
let baseline: Map<string, Entry>;
let outside: Map<string, Entry>;
const started = Date.now();

interface Seeded {
  alpha: Awaited<ReturnType<typeof pushImage>>;
  beta: Awaited<ReturnType<typeof pushImage>>;
  big: Blob;
  index: { digest: string; body: Buffer };
  artifact: { digest: string; body: Buffer };
}
let seeded: Seeded;

const CANARIES: Record<string, string> = {
  'canary.txt': 'the storage root is next door\n',
  'etc/passwd': 'root:x:0:0:canary:/root:/bin/sh\n',
  'docker/registry/v2/canary': 'a lookalike of the layout outside the root\n',
  'root-sibling/data': 'sibling\n',
};

before(async () => {
  sentinel = mkdtempSync(join(tmpdir(), 'berth-fuzz-'));
  for (const [p, content] of Object.entries(CANARIES)) {
    mkdirSync(join(sentinel, p, '..'), { recursive: true });
    writeFileSync(join(sentinel, p), content);
  }
  root = join(sentinel, 'root');
  // No access log: what the process writes is then only warnings and errors, and the suite asserts there are none.
  reg = await startBerth({ root, env: { REGISTRY_LOG_ACCESSLOG_DISABLED: 'true' } });
  port = reg.port;
  const base = reg.url;
  const alpha = await pushImage(base, 'fuzz/alpha', 'v1');
  const beta = await pushImage(base, 'fuzz/beta', 'latest');
  const big = blob(Buffer.alloc(200 * 1024, 'berth-fuzz-'));
  await pushBlob(base, 'fuzz/alpha', big);
  const indexDoc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: alpha.digest, size: alpha.body.length, platform: { architecture: 'amd64', os: 'linux' } }] };
  const ir = await putManifest(base, 'fuzz/alpha', 'multi', indexDoc, OCI_INDEX);
  assert.equal(ir.status, 201, ir.body.toString());
  const artifactDoc = imageManifest(alpha.config, [], { artifactType: 'application/vnd.example.sig', subject: { mediaType: OCI_MANIFEST, digest: alpha.digest, size: alpha.body.length } });
  const ar = await putManifest(base, 'fuzz/alpha', ar0Digest(artifactDoc), artifactDoc);
  assert.equal(ar.status, 201, ar.body.toString());
  // The sessions category works in its own repository; make its `_uploads` exist in the baseline.
  const u = await fetchReq(`${base}/v2/fuzz/uploads/blobs/uploads/`, { method: 'POST' });
  assert.equal(u.status, 202);
  assert.equal((await fetchReq(new URL(u.headers.get('location')!, base).toString(), { method: 'DELETE' })).status, 204);
  seeded = { alpha, beta, big, index: { digest: ir.digest, body: Buffer.from(JSON.stringify(indexDoc)) }, artifact: { digest: ar.digest, body: Buffer.from(JSON.stringify(artifactDoc)) } };
  baseline = snapshot(root, true);
  outside = snapshot(sentinel, true, root);
  console.log(`fuzz: seed ${SEED} (override with FUZZ_SEED), storage root ${root}`);
});

/** CPU seconds (user + system) the Berth process has used. */
function serverCpu(): number | undefined {
  try {
    const f = readFileSync(`/proc/${reg.proc.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(((Number(f[11]) + Number(f[12])) / 100).toFixed(1));
  } catch {
    return undefined;
  }
}

function ar0Digest(doc: unknown): string {
  return sha256(JSON.stringify(doc));
}

after(async () => {
  agent.destroy();
  await reg?.stop();
  if (sentinel) rmSync(sentinel, { recursive: true, force: true });
});

/**
 * The storage tree must equal the baseline (metadata; with content hashes at the end). A request whose
 * connection was cut (a parse error after the body, a half-close) may still be cleaning up in the server when
 * the client sees the close, so a difference is looked at again for a while before it counts.
 */
async function checkTree(hashes = false): Promise<string[]> {
  let d = diff(baseline, snapshot(root, hashes));
  for (let i = 0; d.length > 0 && i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100));
    d = diff(baseline, snapshot(root, hashes));
  }
  return d;
}

/**
 * Runs one category: a property over batches of requests, sent concurrently; each batch must pass `judge` and
 * leave the tree as it was. No shrinking: a changed tree cannot be undone, so the failing batch is shown whole.
 */
async function runCategory(cat: string, seedOffset: number, target: number, arb: fc.Arbitrary<Req>): Promise<void> {
  const before = figures.byCategory[cat] ?? 0;
  const seed = SEED + seedOffset;
  const runs = Math.ceil(target / BATCH);
  const t0 = Date.now();
  await fc.assert(
    fc.asyncProperty(fc.array(arb.map(printable), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
      const results = await Promise.all(batch.map(async (r) => [r, await send(r)] as const));
      const failures = results.flatMap(([r, res]) => {
        const why = judge(r, res);
        return why ? [`${describe(r)}\n    -> ${why}`] : [];
      });
      await cancelStartedUploads();
      if (failures.length > 0) throw new Error(`${failures.length} failing request(s):\n  ${failures.slice(0, 10).join('\n  ')}`);
      const changed = await checkTree();
      if (changed.length > 0) {
        const lines = results.map(([r, res]) => `${describe(r)}\n    -> ${res.status}`);
        throw new Error(`storage tree changed by this batch:\n  ${changed.slice(0, 20).join('\n  ')}\nbatch:\n  ${lines.join('\n  ')}`);
      }
    }),
    { seed, numRuns: runs, endOnFailure: true, verbose: 1 },
  );
  console.log(`fuzz: ${cat}: ${(figures.byCategory[cat] ?? 0) - before} requests in ${((Date.now() - t0) / 1000).toFixed(1)} s (seed ${seed})`);
}

// ---------------------------------------------------------------------------------------------------------------
// Generators shared by categories

const HEX64 = 'e'.repeat(64);
const UNKNOWN = `sha256:${'0123456789abcdef'.repeat(4)}`;
const FAKE_UUID = '6f1c1d3e-0000-4000-8000-000000000000';
const hexChars = (n: number): string => createHash('sha512').update(String(n)).digest('hex').repeat(Math.ceil(n / 128) + 1).slice(0, n);

/** Every way of spelling a climb out of a directory, a separator, a terminator, or an overlong component. */
const TRAVERSALS = [
  '..', '../..', `../../../../../../../../tmp/${PWN}`, `..%2f..%2f..%2f${PWN}`, '%2e%2e', '%2E%2e', '%2e%2E%2f', '%2E%2e/',
  '.%2e', '%2e.', '%252e%252e', '%2f', '%2F', 'a%2fb', '%5c', '%5C', `..%5c..%5c${PWN}`, '\\', `..\\..\\${PWN}`, 'a\\..\\b',
  '%00', 'a%00b', '%00..', '\u0000', 'a\u0000b', '%c0%ae%c0%ae', '%e0%80%ae%e0%80%ae', '%u002e%u002e', '....//', '.../', '.',
  '%2e', '//', '/./', ';/..', '..;', '~', '%7e', '%ff', '\u00e9', 'a'.repeat(256), 'a'.repeat(4200),
  Array.from({ length: 2100 }, () => 'ab').join('/'), '%2e%2e/'.repeat(700), `${'../'.repeat(40)}${PWN}`,
  `docker/registry/v2/../../../${PWN}`, '../root-sibling', '../canary.txt', `../../etc/passwd`,
];

const traversal = fc.tuple(fc.constantFrom('', 'fuzz/', 'fuzz/alpha/', 'x', '/'), fc.constantFrom(...TRAVERSALS), fc.constantFrom('', '/x', PWN, '/..', 'x')).map(([a, b, c]) => `${a}${b}${c}`);

// ---------------------------------------------------------------------------------------------------------------
// Categories

function traversalArb(): fc.Arbitrary<Req> {
  const d = seeded.alpha.layer.digest;
  const positions: Array<(p: string) => string> = [
    (p) => `/v2/${p}/manifests/v1`,
    (p) => `/v2/fuzz/${p}/blobs/${d}`,
    (p) => `/v2/${p}/tags/list`,
    (p) => `/v2/${p}/blobs/uploads/`,
    (p) => `/v2/${p}/referrers/${seeded.alpha.digest}`,
    (p) => `/v2/fuzz/alpha${p}/manifests/v1`,
    (p) => `/v2/fuzz/alpha/manifests/${p}`,
    (p) => `/v2/fuzz/alpha/manifests/v1${p}`,
    (p) => `/v2/fuzz/alpha/blobs/sha256:${p}`,
    (p) => `/v2/fuzz/alpha/blobs/${p}${d}`,
    (p) => `/v2/fuzz/alpha/referrers/${p}`,
    (p) => `/v2/fuzz/alpha/blobs/uploads/?digest=sha256:${p}`,
    (p) => `/v2/fuzz/alpha/blobs/uploads/?mount=${p}&from=fuzz/beta`,
    (p) => `/v2/fuzz/alpha/blobs/uploads/?mount=${seeded.beta.layer.digest}&from=${p}`,
    (p) => `/v2/fuzz/alpha/blobs/uploads/${p}`,
    (p) => `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}${p}`,
    (p) => `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}?_state=${p}`,
    (p) => `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}?_state=${p}&digest=${d}`,
    (p) => `/v2/_catalog?last=${p}`,
    (p) => `/v2/fuzz/alpha/tags/list?n=5&last=${p}`,
    (p) => `/${p}/v2/`,
    (p) => `/v2/${p}`,
    (p) => p,
    (p) => `http://127.0.0.1/${p}`,
  ];
  return fc
    .record({
      pos: fc.integer({ min: 0, max: positions.length - 1 }),
      p: traversal,
      method: fc.constantFrom('GET', 'HEAD', 'DELETE', 'PUT', 'PATCH', 'POST'),
      body: fc.constantFrom('', 'x', `{"schemaVersion":2}`, PWN),
    })
    .map(({ pos, p, method, body }) => {
      const path = positions[pos]!(p);
      // A mount from a valid repository of an invalid digest, or the reverse, is rejected; a plain POST to a
      // name that happens to be valid would start an upload, which these paths never produce (asserted).
      const write = method !== 'GET' && method !== 'HEAD';
      // Raw on the wire, always: fetch and http.request would normalise or refuse some of these.
      const r: Req = { cat: 'traversal', method, path, mustReject: write, forceRaw: true };
      if (write && body) r.body = body;
      if (method === 'POST' && path.includes('?mount=sha256:') && isRepoName(new URLSearchParams(path.split('?')[1]).get('from') ?? '')) r.mayStartUpload = true;
      return r;
    });
}

const BAD_DIGESTS = [
  'md5:d41d8cd98f00b204e9800998ecf8427e', `sha1:${hexChars(40)}`, `sha384:${hexChars(96)}`, 'sha256:', 'sha256', `:${HEX64}`, HEX64,
  `sha256:${hexChars(63)}`, `sha256:${hexChars(65)}`, `sha256:${hexChars(64).toUpperCase()}`, `SHA256:${hexChars(64)}`, `Sha256:${hexChars(64)}`,
  `sha512:${hexChars(64)}`, `sha512:${hexChars(127)}`, `sha512:${hexChars(129)}`, `sha512:${hexChars(128).toUpperCase()}`, `sha256:${hexChars(64)}:`,
  `sha256::${hexChars(64)}`, 'sha256+b64:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564=', `sha256:${'g'.repeat(64)}`, `sha256:${'z'.repeat(64)}`,
  `sha256:${hexChars(64000)}`, `${'a'.repeat(300)}:${hexChars(64)}`, `sha256.x:${hexChars(64)}`, `sha256_:${hexChars(64)}`, `-sha256:${hexChars(64)}`,
  `sha256:${hexChars(62)}==`, `sha256:-${hexChars(63)}`, `sha256:%2e%2e${hexChars(60)}`, `sha256:${hexChars(32)}%2f${hexChars(29)}`,
];

function digestArb(): fc.Arbitrary<Req> {
  const generated = fc
    .tuple(fc.stringMatching(/^[a-zA-Z0-9+._:-]{0,12}$/), fc.integer({ min: 0, max: 140 }), fc.boolean(), fc.nat())
    .map(([alg, n, upper, salt]) => {
      const h = createHash('sha512').update(`${salt}`).digest('hex').repeat(2).slice(0, n);
      return `${alg}:${upper ? h.toUpperCase() : h}`;
    });
  const bad = fc.oneof({ weight: 2, arbitrary: fc.constantFrom(...BAD_DIGESTS) }, { weight: 1, arbitrary: generated });
  const positions: Array<[string, (d: string) => string, boolean]> = [
    ['GET', (d) => `/v2/fuzz/alpha/blobs/${d}`, false],
    ['HEAD', (d) => `/v2/fuzz/alpha/blobs/${d}`, false],
    ['DELETE', (d) => `/v2/fuzz/alpha/blobs/${d}`, true],
    ['GET', (d) => `/v2/fuzz/alpha/manifests/${d}`, false],
    ['HEAD', (d) => `/v2/fuzz/beta/manifests/${d}`, false],
    ['DELETE', (d) => `/v2/fuzz/alpha/manifests/${d}`, true],
    ['PUT', (d) => `/v2/fuzz/alpha/manifests/${d}`, true],
    ['GET', (d) => `/v2/fuzz/alpha/referrers/${d}`, false],
    ['GET', (d) => `/v2/fuzz/alpha/referrers/${seeded.alpha.digest}?last=${d}&n=1`, false],
    ['POST', (d) => `/v2/fuzz/alpha/blobs/uploads/?digest=${d}`, true],
    ['POST', (d) => `/v2/fuzz/alpha/blobs/uploads/?mount=${d}&from=fuzz/beta&digest=${d}`, true],
    ['PUT', (d) => `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}?digest=${d}`, true],
    ['DELETE', (d) => `/v2/fuzz/nonexistent/blobs/${d}`, true],
  ];
  return fc.tuple(fc.integer({ min: 0, max: positions.length - 1 }), bad, fc.uint8Array({ maxLength: 64 })).map(([i, d, body]) => {
    const [method, path, write] = positions[i]!;
    const r: Req = { cat: 'digests', method, path: path(encodeURI(d).replace(/\?/g, '%3F')), mustReject: write };
    if (r.path.includes('?mount=')) r.mayStartUpload = true;
    if (write && method !== 'DELETE') {
      // A manifest PUT by a digest gets a body that cannot match it; a monolithic upload gets bytes whose
      // digest is not the (invalid, or random) one named. A "digest" without a colon is a tag: the manifest
      // names a layer nobody pushed, so it is rejected there too.
      r.body = method === 'PUT' && r.path.includes('/manifests/') ? JSON.stringify({ ...template(), annotations: { n: String(body.length) } }) : Buffer.from(body);
    }
    return r;
  });
}

const RANGES = [
  'bytes=10-5', 'bytes=0-1,2-3', 'bytes=0-10,5-15', 'bytes=0-99999999999999999999999', 'bytes=99999999999999999999-', 'bytes=-99999999999999999999',
  'bytes=--5', 'bytes=-0', 'bytes=-', 'bytes=', 'bytes', 'bytes=abc', 'items=0-1', 'bytes=0-0,-1', 'bytes= 0-1', 'bytes=0 -1', 'bytes=1e3-2e3',
  'bytes=0x10-0x20', 'bytes=-1-2', 'bytes=0-1, 0-1', 'bytes=9007199254740993-9007199254740999', 'bytes=0-9007199254740993', '', ' ', 'bytes=0-',
  'bytes=-1', `bytes=${200 * 1024}-`, `bytes=${200 * 1024 - 1}-`, `bytes=0-${'9'.repeat(400)}`, `bytes=${Array.from({ length: 500 }, (_, i) => `${i}-${i}`).join(',')}`,
  'bytes=0-1;q=1', 'BYTES=0-1', 'bytes=1-1', 'bytes=+1-2', 'bytes=1.5-2', 'bytes=١-٢',
];
const CONTENT_RANGES = [
  '0-0', '1-0', '5-3', '0-99999999999999999999', '99999999999999999999-99999999999999999999', '-1-5', '0-', '-5', 'bytes 0-0/1', 'bytes=0-0',
  'bytes 0-0/*', '0-0/0', '0-1,2-3', '0-9007199254740993', 'abc', '', ' ', '0--1', '0-1 ', 'bytes */100', '1e2-2e2', '0x0-0x1', '00000000000000000000-0',
  `0-${'9'.repeat(300)}`, '10-20', '0-1/1', '0 - 1', '٠-١',
];

function rangeArb(): fc.Arbitrary<Req> {
  const generated = fc
    .tuple(fc.oneof(fc.nat(), fc.bigInt({ min: 0n, max: 10n ** 30n })), fc.oneof(fc.nat(), fc.bigInt({ min: 0n, max: 10n ** 30n }), fc.constant('')), fc.nat({ max: 4 }))
    .map(([a, b, extra]) => ['bytes=' + [`${a}-${b}`, ...Array.from({ length: extra }, (_, i) => `${i * 7}-${i * 3}`)].join(',')][0]!);
  const range = fc.oneof(fc.constantFrom(...RANGES), generated);
  const cr = fc.oneof(fc.constantFrom(...CONTENT_RANGES), fc.tuple(fc.nat(), fc.integer({ min: -5, max: 5 })).map(([a, d]) => `${a}-${a + d}`));
  const reads = fc.tuple(fc.constantFrom('GET', 'HEAD'), fc.constantFrom(seeded.alpha.layer.digest, seeded.big.digest, seeded.alpha.config.digest, UNKNOWN), range).map(
    ([method, d, rg]): Req => ({ cat: 'ranges', method, path: `/v2/fuzz/alpha/blobs/${d}`, headers: { Range: rg } }),
  );
  const multi = fc.tuple(range, range).map(([a, b]): Req => ({ cat: 'ranges', method: 'GET', path: `/v2/fuzz/alpha/blobs/${seeded.big.digest}`, headers: { Range: [a, b] } }));
  const writes = fc.tuple(fc.constantFrom('PATCH', 'PUT'), cr, fc.uint8Array({ maxLength: 32 })).map(
    ([method, c, body]): Req => ({
      cat: 'ranges',
      method,
      path: `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}${method === 'PUT' ? `?digest=${UNKNOWN}` : ''}`,
      headers: { 'Content-Range': c, 'Content-Type': 'application/octet-stream' },
      body: Buffer.from(body),
      mustReject: true,
    }),
  );
  return fc.oneof({ weight: 5, arbitrary: reads }, { weight: 1, arbitrary: multi }, { weight: 2, arbitrary: writes });
}

const MEDIA_TYPES = [
  OCI_MANIFEST, OCI_INDEX, 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'application/json', '',
  'text/plain', `${OCI_MANIFEST}; charset=utf-8`, OCI_MANIFEST.toUpperCase(), 'application/vnd.oci.image.config.v1+json', '*/*', 'a'.repeat(2000),
];

/** Header names and values that fetch could send, against every route. */
function headerArb(): fc.Arbitrary<Req> {
  const printable = fc.string({ unit: 'grapheme-ascii', maxLength: 80 });
  const header = fc.oneof(
    fc.tuple(fc.constant('Range'), fc.constantFrom(...RANGES)),
    fc.tuple(fc.constant('Content-Range'), fc.constantFrom(...CONTENT_RANGES)),
    fc.tuple(fc.constant('Content-Type'), fc.oneof(fc.constantFrom(...MEDIA_TYPES), printable)),
    fc.tuple(fc.constant('Accept'), fc.oneof(fc.constantFrom(...MEDIA_TYPES), printable)),
    fc.tuple(fc.constant('If-None-Match'), fc.oneof(fc.constantFrom(`"${seeded.alpha.digest}"`, seeded.alpha.layer.digest, '*', '""', 'W/"x"'), printable)),
    fc.tuple(fc.constantFrom('X-Forwarded-Host', 'X-Forwarded-Proto', 'X-Forwarded-For', 'Forwarded'), fc.oneof(printable, fc.constantFrom('evil.example/../..', 'a b', 'https, http', '[::1]:x', ''))),
    fc.tuple(fc.constant('Authorization'), fc.oneof(printable, fc.constantFrom('Bearer ', 'Basic !!!', 'Basic Og==', `Bearer ${'a.'.repeat(500)}`))),
    fc.tuple(fc.constant('X-Request-Id'), fc.oneof(printable, fc.constant('r'.repeat(4000)))),
    fc.tuple(fc.constantFrom('Docker-Upload-UUID', 'Expect', 'Cache-Control', 'Cookie', 'Origin', 'User-Agent', 'TE', 'Upgrade'), printable),
    fc.tuple(fc.stringMatching(/^X-[A-Za-z0-9-]{1,40}$/), printable),
  );
  const d = seeded.alpha;
  const reads = [
    '/v2/', '/v2/_catalog', '/v2/_catalog?n=1', '/v2/_catalog?n=99999999999', '/v2/_catalog?n=-1', '/v2/fuzz/alpha/tags/list', '/v2/fuzz/alpha/tags/list?n=0&last=',
    '/v2/fuzz/alpha/manifests/v1', `/v2/fuzz/alpha/manifests/${d.digest}`, '/v2/fuzz/alpha/manifests/multi', `/v2/fuzz/alpha/blobs/${d.layer.digest}`,
    `/v2/fuzz/alpha/blobs/${seeded.big.digest}`, `/v2/fuzz/alpha/referrers/${d.digest}`, `/v2/fuzz/alpha/referrers/${d.digest}?artifactType=x&n=abc`,
    `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}`, '/v2/fuzz/nonexistent/manifests/v1', '/v2/fuzz/alpha/manifests/nope', `/v2/fuzz/beta/blobs/${d.layer.digest}`,
  ];
  const writes: Array<[string, string]> = [
    ['PUT', '/v2/fuzz/alpha/manifests/fuzzput'],
    ['PUT', '/v2/fuzz/alpha/manifests/v1'],
    ['PUT', `/v2/fuzz/alpha/manifests/${UNKNOWN}`],
    ['DELETE', '/v2/fuzz/alpha/manifests/nope'],
    ['DELETE', `/v2/fuzz/alpha/manifests/${UNKNOWN}`],
    ['DELETE', `/v2/fuzz/alpha/blobs/${UNKNOWN}`],
    ['PATCH', `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}`],
    ['PUT', `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}?digest=${UNKNOWN}`],
    ['DELETE', `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}`],
    ['POST', `/v2/fuzz/alpha/blobs/uploads/?digest=${UNKNOWN}`],
    ['POST', `/v2/fuzz/alpha/blobs/uploads/?mount=${UNKNOWN}&from=fuzz/beta&digest=${UNKNOWN}`],
    ['POST', `/v2/fuzz/alpha/_catalog`],
    ['PUT', '/v2/'],
    ['DELETE', '/v2/fuzz/alpha/tags/list'],
  ];
  const read = fc.tuple(fc.constantFrom('GET', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'get'), fc.constantFrom(...reads)).map(([m, p]) => ({ method: m, path: p, write: !['GET', 'HEAD'].includes(m) }));
  const write = fc.constantFrom(...writes).map(([m, p]) => ({ method: m, path: p, write: true }));
  return fc
    .tuple(fc.oneof(read, write), fc.array(header, { maxLength: 8 }), fc.oneof(fc.uint8Array({ maxLength: 256 }), fc.json({ maxDepth: 3 }).map((s) => Buffer.from(s))))
    .map(([t, hs, body]) => {
      const headers: Record<string, string[]> = {};
      for (const [k, v] of hs) (headers[k] ??= []).push(v);
      const r: Req = { cat: 'headers', method: t.method, path: t.path, headers, mustReject: t.write };
      if (r.method === 'POST' && r.path.includes('?mount=')) r.mayStartUpload = true;
      // http.request upper-cases methods; a lower-case one must reach the server as it is.
      if (r.method === 'get') r.forceRaw = true;
      if (t.write) r.body = Buffer.from(body);
      return r;
    });
}

// ----- manifests

const LAYER_MT = 'application/vnd.oci.image.layer.v1.tar+gzip';

/**
 * A manifest that would be valid but for a config and a layer nobody pushed: no single mutation can make it
 * valid (it would have to fix both), so whatever a mutation does, it is rejected.
 */
function template(): Record<string, unknown> {
  const m = imageManifest(seeded.alpha.config, [seeded.alpha.layer]);
  (m.config as { digest: string }).digest = `sha256:${'9'.repeat(64)}`;
  (m.layers as unknown[]).push({ mediaType: LAYER_MT, digest: UNKNOWN, size: 1 });
  return m;
}

const MUTABLE_PATHS = [
  ['schemaVersion'], ['mediaType'], ['config'], ['config', 'digest'], ['config', 'size'], ['config', 'mediaType'], ['layers'], ['layers', '0'],
  ['layers', '0', 'size'], ['layers', '0', 'digest'], ['layers', '0', 'urls'], ['layers', '0', 'annotations'], ['annotations'], ['subject'],
  ['subject', 'digest'], ['artifactType'], ['manifests'], ['manifests', '0'], ['__proto__'], ['constructor'],
];

function mutate(doc: Record<string, unknown>, path: string[], value: unknown, remove: boolean): Record<string, unknown> {
  let cur: Record<string, unknown> = doc;
  for (const k of path.slice(0, -1)) {
    const next = cur[k];
    if (typeof next !== 'object' || next === null) {
      const fresh: Record<string, unknown> = {};
      Object.defineProperty(cur, k, { value: fresh, enumerable: true, writable: true, configurable: true });
      cur = fresh;
    } else cur = next as Record<string, unknown>;
  }
  const last = path[path.length - 1]!;
  if (remove) delete cur[last];
  else Object.defineProperty(cur, last, { value, enumerable: true, writable: true, configurable: true });
  return doc;
}

function nested(depth: number, open: string, close: string, inner = '1'): string {
  return `${open.repeat(depth)}${inner}${close.repeat(depth)}`;
}

function manifestArb(): fc.Arbitrary<Req> {
  const tag = fc.constantFrom('fuzzput', 'v1', 'multi', 'latest', UNKNOWN, `sha512:${'a'.repeat(128)}`);
  const repo = fc.constantFrom('fuzz/alpha', 'fuzz/beta', 'fuzz/newrepo');
  const ct = fc.constantFrom(...MEDIA_TYPES);
  const put = (kind: string, body: Buffer | string, contentType: string, r: string, t: string): Req => ({
    cat: 'manifests',
    method: 'PUT',
    path: `/v2/${r}/manifests/${t}`,
    headers: contentType === '' ? { 'X-Fuzz-Kind': kind } : { 'Content-Type': contentType, 'X-Fuzz-Kind': kind },
    body,
    mustReject: true,
  });
  const valid = JSON.stringify(template());
  const invalidJson = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    fc.integer({ min: 0, max: valid.length - 1 }).map((i) => valid.slice(0, i)),
    fc.tuple(fc.integer({ min: 0, max: valid.length - 1 }), fc.string({ minLength: 1, maxLength: 3 })).map(([i, s]) => `${valid.slice(0, i)}${s}${valid.slice(i + 1)}`),
    fc.constantFrom(`\ufeff${valid}`, `${valid}}`, `${valid} garbage`, `${valid}\u0000`, valid.replace(/"/g, "'"), 'null', '[]', '"x"', '2', 'true', '{}', '', '{"schemaVersion":2,}', `[${valid}]`),
  );
  const mutated = fc
    .tuple(fc.constantFrom(...MUTABLE_PATHS), fc.jsonValue({ maxDepth: 3 }), fc.boolean(), fc.boolean())
    // An index whose `manifests` became [] is a valid empty index: the one mutation that can fix it.
    .filter(([path, value, remove, index]) => !(index && !remove && path.join('.') === 'manifests' && Array.isArray(value) && value.length === 0))
    .map(([path, value, remove, index]) => {
      const doc = template();
      if (index) {
        doc.mediaType = OCI_INDEX;
        doc.manifests = [{ mediaType: OCI_MANIFEST, digest: UNKNOWN, size: 10 }];
      }
      return JSON.stringify(mutate(doc, path, value, remove));
    });
  const deep = fc
    .tuple(fc.integer({ min: 10_000, max: pick(60_000, 400_000) }), fc.constantFrom('array', 'object', 'annotations', 'layers', 'index', 'unclosed'))
    .map(([depth, where]) => {
      switch (where) {
        case 'array':
          return nested(depth, '[', ']');
        case 'object':
          return nested(depth, '{"a":', '}');
        case 'annotations':
          return `{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","annotations":${nested(depth, '{"a":', '}', '"x"')}}`;
        case 'layers':
          return `{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","config":${JSON.stringify(template().config)},"layers":${nested(depth, '[', ']', '{}')}}`;
        case 'index':
          return `{"schemaVersion":2,"mediaType":"${OCI_INDEX}","manifests":[{"mediaType":"${OCI_MANIFEST}","digest":"${UNKNOWN}","size":1,"platform":${nested(depth, '{"p":', '}')}}]}`;
        default:
          return '['.repeat(depth);
      }
    });
  const selfRef = fc.constantFrom('index-self', 'index-unknown', 'index-blob', 'subject-self', 'config-manifest', 'index-in-index-unknown', 'mixed').map((kind) => {
    const a = seeded.alpha;
    const known = { mediaType: OCI_MANIFEST, digest: a.digest, size: a.body.length };
    let doc: Record<string, unknown>;
    switch (kind) {
      case 'index-self': {
        // An index cannot contain its own digest; the nearest thing: it lists the digest it is PUT under.
        const inner = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [known] };
        const d0 = sha256(JSON.stringify(inner));
        doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [known, { mediaType: OCI_INDEX, digest: d0, size: 10 }] };
        return { doc, ref: d0 };
      }
      case 'index-unknown':
        doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [known, { mediaType: OCI_MANIFEST, digest: UNKNOWN, size: 3 }] };
        return { doc, ref: 'selfref' };
      case 'index-blob':
        doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: a.layer.digest, size: a.layer.size }] };
        return { doc, ref: 'selfref' };
      case 'subject-self': {
        const inner = template();
        const d0 = sha256(JSON.stringify(inner));
        doc = { ...template(), subject: { mediaType: OCI_MANIFEST, digest: d0, size: 1 } };
        return { doc, ref: d0 };
      }
      case 'config-manifest':
        doc = imageManifest({ data: a.body, digest: a.digest, size: a.body.length }, []);
        return { doc, ref: 'selfref' };
      case 'index-in-index-unknown':
        doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_INDEX, digest: seeded.index.digest, size: seeded.index.body.length }, { mediaType: OCI_INDEX, digest: UNKNOWN, size: 1 }] };
        return { doc, ref: 'multi' };
      default:
        doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [known], config: template().config, layers: [] };
        return { doc, ref: a.digest };
    }
  });
  return fc.oneof(
    { weight: 4, arbitrary: fc.tuple(invalidJson, ct, repo, tag).map(([b, c, r, t]) => put('invalid-json', b, c, r, t)) },
    { weight: 6, arbitrary: fc.tuple(mutated, ct, repo, tag).map(([b, c, r, t]) => put('mutated', b, c, r, t)) },
    { weight: 1, arbitrary: fc.tuple(deep, ct).map(([b, c]) => put('deep', b, c, 'fuzz/alpha', 'deep')) },
    { weight: 2, arbitrary: fc.tuple(selfRef, fc.constantFrom(OCI_INDEX, OCI_MANIFEST, '')).map(([s, c]) => put('self-ref', JSON.stringify(s.doc), c, 'fuzz/alpha', s.ref)) },
  );
}

/** Huge indexes: near and above the 4 MiB limit, many references to one manifest or to many unknown ones. */
function hugeIndexes(): Req[] {
  const known = JSON.stringify({ mediaType: OCI_MANIFEST, digest: seeded.alpha.digest, size: seeded.alpha.body.length });
  const unknown = (i: number): string => JSON.stringify({ mediaType: OCI_MANIFEST, digest: `sha256:${createHash('sha256').update(String(i)).digest('hex')}`, size: 1 });
  const index = (entries: string[], pad = 0): string => `{"schemaVersion":2,"mediaType":"${OCI_INDEX}","manifests":[${entries.join(',')}]${' '.repeat(pad)}}`;
  const fill = (n: number, f: (i: number) => string): string[] => Array.from({ length: n }, (_, i) => f(i));
  const limit = 4 * MIB;
  // Fits exactly: n known entries and one unknown, padded to the limit.
  const near = (f: (i: number) => string): string => {
    const n = Math.floor((limit - 200) / (known.length + 1)) - 1;
    const entries = [...fill(n, f), unknown(-1)];
    const body = index(entries);
    return index(entries, Math.max(0, limit - body.length));
  };
  const bodies: Array<[string, string]> = [
    ['50k-known', index(fill(50_000, () => known))],
    ['50k-unknown', index(fill(50_000, unknown))],
    ['at-limit-known', near(() => known)],
    ['at-limit-unknown', near(unknown)],
    ['limit+1', near(() => known) + ' '],
    ['30k-known-one-unknown', index([...fill(30_000, () => known), unknown(7)])],
  ];
  return bodies.map(([kind, body]) => ({ cat: 'manifests', method: 'PUT', path: '/v2/fuzz/alpha/manifests/huge', headers: { 'Content-Type': OCI_INDEX, 'X-Fuzz-Kind': kind }, body, mustReject: true }));
}

// ----- raw protocol

function protocolArb(): fc.Arbitrary<Req> {
  const crlf = fc.constantFrom('\r\n', '\r\n', '\r\n', '\n', '\r', '\n\r');
  const method = fc.constantFrom('GET', 'HEAD', 'PUT', 'PATCH', 'POST', 'DELETE', 'get', 'G ET', 'GET\u0000', 'X'.repeat(100), '', 'PRI', 'CONNECT', 'TRACE', 'OPTIONS', 'PROPFIND', 'GET GET', '\u00ff');
  const target = fc.constantFrom(
    '/v2/', '*', '', 'v2/', 'http://evil/v2/', '/v2/\u0000', '/v2/ /x', '/v2/\t', '//v2//', '/v2/fuzz/alpha/manifests/v1', `/v2/${'a'.repeat(9000)}`, `/v2/${'a/'.repeat(12_000)}`,
    `/v2/fuzz/alpha/blobs/uploads/${FAKE_UUID}`, '/v2/fuzz/alpha/manifests/fuzzput', `/v2/fuzz/alpha/blobs/uploads/?digest=${UNKNOWN}`, '/v2/fuzz/alpha/blobs/%', '/v2/%zz', '/v2/#frag',
  );
  const version = fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/1.1 extra', 'http/1.1', '', 'HTTP/1', 'HTTP/1.1\u0000', 'HTTP/0.9', 'HTTP/1.01');
  const headerLine = fc.oneof(
    fc.constantFrom(
      'Host: a', 'Host: a', 'Host: b', 'Content-Length: 5', 'Content-Length: 5', 'Content-Length: 6', 'Content-Length: -1', 'Content-Length: 1e3', 'Content-Length: 0x10',
      'Content-Length: 99999999999999999999999', 'Content-Length: 5, 5', 'Content-Length:', 'Transfer-Encoding: chunked', 'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip',
      'Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: chunked, gzip', 'Transfer-Encoding: xchunked', 'Transfer-Encoding : chunked', 'Content-Type: a', `Content-Type: ${OCI_MANIFEST}`,
      `Content-Type: ${OCI_INDEX}`, 'Range: bytes=0-1', 'Range: bytes=2-3', 'Content-Range: 0-4', 'Content-Range: 5-9', 'Expect: 100-continue', 'Expect: 200-ok', 'Connection: upgrade',
      'Upgrade: websocket', 'Upgrade: h2c', 'X-Nul: a\u0000b', 'X-Cr: a\rb', 'X-Lf: a\nb', ' folded: continuation', '\tobs-fold', 'No-Colon', ': empty-name', 'Bad Name: x',
      'X-\u00ff: latin', `X-Big: ${'b'.repeat(20_000)}`, `X-${'n'.repeat(10_000)}: x`, 'Authorization: Basic Og==', 'Connection: keep-alive', 'Connection: close',
    ),
    fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,20}$/), fc.string({ unit: 'binary-ascii', maxLength: 40 })).map(([k, v]) => `${k}: ${v}`),
  );
  const many = fc.integer({ min: 150, max: 2500 }).map((n) => Array.from({ length: n }, (_, i) => `X-H${i}: v`).join('\r\n'));
  const body = fc.oneof(
    fc.constantFrom('', 'hello', '5\r\nhello\r\n0\r\n\r\n', 'zz\r\nhello\r\n0\r\n\r\n', 'ffffffffffffffffff\r\nx', '5\r\nhel', '-1\r\n', '5;ext=\u0000\r\nhello\r\n0\r\n\r\n', '0\r\n\r\nGET / HTTP/1.1\r\n\r\n', '{"schemaVersion":2}'),
    fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')),
  );
  return fc
    .record({
      method,
      target,
      version,
      eol: crlf,
      headers: fc.array(headerLine, { maxLength: 6 }),
      many: fc.option(many, { freq: 15 }),
      body,
      lying: fc.constantFrom('none', 'none', 'longer', 'shorter', 'duplicate'),
      garbage: fc.option(fc.uint8Array({ minLength: 1, maxLength: 300 }), { freq: 8 }),
    })
    .map((x) => {
      let bytes: Buffer;
      let halfClose = false;
      if (x.garbage) {
        bytes = Buffer.from(x.garbage);
        halfClose = true;
      } else {
        const lines = [`${x.method} ${x.target} ${x.version}`.replace(/ $/, ''), ...x.headers];
        if (x.many) lines.push(x.many);
        const b = Buffer.from(x.body, 'latin1');
        if (x.lying === 'longer') {
          lines.push(`Content-Length: ${b.length + 1 + (b.length % 50)}`);
          halfClose = true;
        } else if (x.lying === 'shorter') lines.push(`Content-Length: ${Math.max(0, b.length - 3)}`);
        else if (x.lying === 'duplicate') lines.push(`Content-Length: ${b.length}`, `Content-Length: ${b.length + 1}`);
        lines.push('Connection: close');
        bytes = Buffer.concat([Buffer.from(lines.join(x.eol) + x.eol + x.eol, 'latin1'), b]);
        // A chunked or unframed body may be incomplete: our FIN ends it.
        if (x.headers.some((h) => /transfer-encoding/i.test(h)) || x.eol !== '\r\n') halfClose = true;
      }
      // Writes to these targets are rejected whatever the framing: an invalid manifest, an unknown upload, a
      // monolithic upload whose bytes cannot have the unknown digest.
      const isWrite = /^(PUT|PATCH|POST|DELETE)$/.test(x.method);
      return { cat: 'protocol', method: x.method, path: x.target, raw: bytes, halfClose, mustReject: isWrite };
    });
}

/** Fixed protocol cases that must each be seen, whatever the seed. */
function protocolFixed(): Req[] {
  const p = (s: string, halfClose = false): Req => ({ cat: 'protocol', method: 'RAW', path: '', raw: Buffer.from(s, 'latin1'), halfClose, mustReject: /^(PUT|PATCH|POST|DELETE) /.test(s) });
  const manifest = JSON.stringify(template());
  return [
    p('GET\r\n\r\n'),
    p('GET /v2/\r\n\r\n'),
    p('\r\n\r\n\r\n', true),
    p('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    p(`GET /v2/ HTTP/1.1\r\nHost: x\r\n${'X-A: b\r\n'.repeat(3000)}\r\n`),
    p(`GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(70_000)}\r\n\r\n`),
    p(`PUT /v2/fuzz/alpha/manifests/fuzzput HTTP/1.1\r\nHost: x\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: ${manifest.length}\r\nContent-Length: 3\r\nConnection: close\r\n\r\n${manifest}`),
    p(`PUT /v2/fuzz/alpha/manifests/fuzzput HTTP/1.1\r\nHost: x\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: ${manifest.length + 500}\r\nConnection: close\r\n\r\n${manifest}`, true),
    p(`PUT /v2/fuzz/alpha/manifests/fuzzput HTTP/1.1\r\nHost: x\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: 10\r\nConnection: close\r\n\r\n${manifest}`),
    p(`PUT /v2/fuzz/alpha/manifests/fuzzput HTTP/1.1\r\nHost: x\r\nContent-Type: ${OCI_MANIFEST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n`),
    p(`PUT /v2/fuzz/alpha/manifests/fuzzput HTTP/1.1\r\nHost: x\r\nContent-Type: ${OCI_MANIFEST}\r\nTransfer-Encoding: chunked\r\n\r\n${(manifest.length + 10).toString(16)}\r\n${manifest}`, true),
    p(`POST /v2/fuzz/alpha/blobs/uploads/?digest=${UNKNOWN} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly-some-bytes`, true),
    p(`POST /v2/fuzz/alpha/blobs/uploads/?digest=${UNKNOWN} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nmore-bytes-than-announced`),
    p(`POST /v2/fuzz/alpha/blobs/uploads/?digest=${UNKNOWN} HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\nConnection: close\r\n\r\nwrong-digested!`),
    p(`POST /v2/fuzz/alpha/blobs/uploads/?digest=${UNKNOWN} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\n`, true),
    p(`PATCH /v2/fuzz/alpha/blobs/uploads/${FAKE_UUID} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`),
    p(`GET /v2/fuzz/alpha/blobs/${seeded.big.digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nRange: bytes=5-9\r\nConnection: close\r\n\r\n`),
    p(`GET /v2/fuzz/alpha/../../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p(`GET /v2/fuzz\\alpha\\manifests\\v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p(`GET /v2/fuzz/alpha/manifests/v1\u0000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p(`GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Nul: a\u0000b\r\nConnection: close\r\n\r\n`),
    p(`GET /v2/ HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n`),
    p(`GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n`),
    p(`GET /v2/ HTTP/1.0\r\n\r\n`),
  ];
}

// ----- sessions: hostile requests against real upload sessions

interface Session {
  uuid: string;
  location: string;
  state: string;
}

function sessionData(uuid: string): Buffer | undefined {
  const f = join(root, 'docker/registry/v2/repositories/fuzz/uploads/_uploads', uuid, 'data');
  return existsSync(f) ? readFileSync(f) : undefined;
}

async function openSession(): Promise<Session> {
  const r = await fetchReq(`${reg.url}/v2/fuzz/uploads/blobs/uploads/`, { method: 'POST' });
  assert.equal(r.status, 202);
  const location = r.headers.get('location')!;
  const u = new URL(location, reg.url);
  return { uuid: r.headers.get('docker-upload-uuid')!, location: `${u.pathname}`, state: u.searchParams.get('_state')! };
}

type SessionOp = (s: Session, other: Session) => Req;

function sessionOps(): fc.Arbitrary<SessionOp> {
  const cat = 'sessions';
  const data = fc.uint8Array({ minLength: 0, maxLength: 64 }).map((b) => Buffer.from(b));
  const path = (s: Session, q = ''): string => `${s.location}${q}`;
  const tamper = fc.constantFrom('flip', 'other', 'truncate', 'garbage', 'empty', 'pad', 'otherName', 'traversal');
  const stateQ = (s: Session, other: Session, how: string): string => {
    switch (how) {
      case 'flip':
        return `?_state=${encodeURIComponent(s.state.slice(0, 10) + (s.state[10] === 'A' ? 'B' : 'A') + s.state.slice(11))}`;
      case 'other':
        return `?_state=${encodeURIComponent(other.state)}`;
      case 'truncate':
        return `?_state=${encodeURIComponent(s.state.slice(0, 40))}`;
      case 'garbage':
        return '?_state=%%%';
      case 'empty':
        return '?_state=';
      case 'pad':
        return `?_state=${encodeURIComponent(s.state)}${'A'.repeat(100)}`;
      case 'otherName':
        return `?_state=${encodeURIComponent(other.state)}&_state=${encodeURIComponent(s.state)}`;
      default:
        return `?_state=..%2f..%2f${PWN}`;
    }
  };
  return fc.oneof(
    // Content-Range that is malformed, reversed, overlapping what was received, or beyond it.
    fc.tuple(fc.constantFrom(...CONTENT_RANGES, 'OVERLAP', 'GAP', 'REVERSED'), data).map(
      ([cr, body]): SessionOp =>
        (s) => {
          const have = sessionData(s.uuid)?.length ?? 0;
          const v = cr === 'OVERLAP' ? `${Math.max(0, have - 2)}-${Math.max(0, have - 2) + body.length - 1}` : cr === 'GAP' ? `${have + 5}-${have + 4 + body.length}` : cr === 'REVERSED' ? `${have + 3}-${have}` : cr;
          return { cat, method: 'PATCH', path: path(s), headers: { 'Content-Range': v, 'Content-Type': 'application/octet-stream' }, body };
        },
    ),
    // Content-Range that disagrees with Content-Length (raw, so the length can lie).
    fc.tuple(data, fc.integer({ min: -3, max: 3 }).filter((d) => d !== 0)).map(
      ([body, d]): SessionOp =>
        (s) => {
          const have = sessionData(s.uuid)?.length ?? 0;
          return { cat, method: 'PATCH', path: path(s), headers: { 'Content-Range': `${have}-${have + body.length - 1 + d}`, 'Content-Length': String(body.length) }, body, raw: undefined };
        },
    ),
    // Tampered, foreign or malformed `_state`.
    fc.tuple(tamper, fc.constantFrom('GET', 'PATCH', 'PUT', 'DELETE'), data).map(
      ([how, method, body]): SessionOp =>
        (s, other) => ({ cat, method, path: path(s, stateQ(s, other, how) + (method === 'PUT' ? `&digest=${sha256(body)}` : '')), body: method === 'PATCH' || method === 'PUT' ? body : undefined }),
    ),
    // Completion with invalid digests (the upload must survive) or a valid digest of other bytes (removed, as in distribution).
    fc.tuple(fc.constantFrom(...BAD_DIGESTS.filter((d) => d.length < 300)), data).map(
      ([d, body]): SessionOp =>
        (s) => ({ cat, method: 'PUT', path: path(s, `?digest=${encodeURIComponent(d)}`), body, headers: { 'Content-Type': 'application/octet-stream' } }),
    ),
    data.map((body): SessionOp => (s) => ({ cat, method: 'PUT', path: path(s, `?digest=${UNKNOWN}`), body })),
    // The session under another repository name, or a sibling of its UUID.
    fc.constantFrom('fuzz/alpha', 'fuzz/newrepo', 'fuzz/uploads/x').map((name): SessionOp => (s) => ({ cat, method: 'PATCH', path: `/v2/${name}/blobs/uploads/${s.uuid}`, body: 'abc' })),
    fc.constantFrom('..', '%2e%2e', `${'0'.repeat(8)}-0000-0000-0000-000000000000`, 'A', '\\..\\').map((x): SessionOp => (s) => ({ cat, method: 'PATCH', path: `/v2/fuzz/uploads/blobs/uploads/${s.uuid.slice(0, -2)}${x}`, body: 'abc' })),
    // A lying Content-Length: longer (we half-close) or shorter (the rest is a second, garbage request).
    fc.tuple(data, fc.boolean()).map(
      ([body, longer]): SessionOp =>
        (s) => {
          const cl = longer ? body.length + 10 : Math.max(0, body.length - 5);
          const head = `PATCH ${s.location} HTTP/1.1\r\nHost: x\r\nContent-Length: ${cl}\r\nConnection: close\r\n\r\n`;
          return { cat, method: 'PATCH', path: s.location, raw: Buffer.concat([Buffer.from(head), body]), halfClose: longer };
        },
    ),
    // Well-formed appends: accepted, and the next hostile request starts from the new state.
    data.map((body): SessionOp => (s) => ({ cat, method: 'PATCH', path: path(s), body, headers: { 'Content-Type': 'application/octet-stream' } })),
  );
}

/**
 * One run: a fresh session, then hostile requests one after another. After each: a 4xx left the session's
 * bytes as they were (or, for a completion with a well-formed wrong digest only, removed the session, as
 * distribution does); a 202 or a closed connection may have appended, which becomes the new expectation.
 */
async function sessionRun(ops: SessionOp[]): Promise<void> {
  const s = await openSession();
  const other = await openSession();
  try {
    for (const op of ops) {
      const r = op(s, other);
      const before = sessionData(s.uuid);
      const res = await send(r);
      const why = judge(r, res);
      if (why) throw new Error(`${describe(r)}\n    -> ${why}`);
      const now = sessionData(s.uuid);
      if (res.status === 201) throw new Error(`${describe(r)}\n    -> a hostile completion was accepted`);
      // A 4xx the registry wrote has an OCI error body. Node's own 400 for a body cut short (our FIN before the
      // announced length) is a cut connection like any other: the bytes that arrived are kept for a resume, by
      // design, so the data may only have grown by a prefix of what was sent.
      const ociError = res.body.startsWith('{"errors"');
      if ((res.status === 'closed' || (typeof res.status === 'number' && res.status >= 400 && !ociError)) && before !== undefined && now !== undefined) {
        const sent = Buffer.from(r.raw ? r.raw.subarray(r.raw.indexOf('\r\n\r\n') + 4) : (r.body ?? ''));
        const grown = now.subarray(before.length);
        if (!now.subarray(0, before.length).equals(before) || !sent.subarray(0, grown.length).equals(grown)) {
          throw new Error(`${describe(r)}\n    -> ${res.status}, and the session's bytes are not the old ones plus a prefix of the body`);
        }
      } else if (typeof res.status === 'number' && res.status >= 400 && !(now?.equals(before ?? Buffer.alloc(0)) && before !== undefined)) {
        const removedByDigestMismatch = now === undefined && before !== undefined && r.method === 'PUT' && /DIGEST_INVALID/.test(res.body) && /"actual"/.test(res.body);
        const alreadyGone = now === undefined && before === undefined;
        if (!removedByDigestMismatch && !alreadyGone) {
          throw new Error(`${describe(r)}\n    -> ${res.status} ${short(res.body, 300)}, but the session's bytes changed: ${before?.length} -> ${now?.length} bytes`);
        }
      }
      if (now === undefined) break;
    }
  } finally {
    for (const x of [s, other]) await fetchReq(`${reg.url}${x.location}`, { method: 'DELETE' });
  }
}

// ---------------------------------------------------------------------------------------------------------------

const TARGETS = {
  traversal: pick(2600, 26_000),
  digests: pick(1300, 13_000),
  headers: pick(2600, 26_000),
  ranges: pick(1100, 11_000),
  manifests: pick(1000, 10_000),
  protocol: pick(1300, 13_000),
  sessions: pick(700, 7000),
};

test('hostile requests: no 5xx, no hang, nothing written outside the root, the tree unchanged by rejections', { timeout: pick(240_000, 3_600_000) }, async () => {
  const t0 = Date.now();
  await runCategory('traversal', 1, TARGETS.traversal, traversalArb());
  await runCategory('digests', 2, TARGETS.digests, digestArb());
  await runCategory('headers', 3, TARGETS.headers, headerArb());
  await runCategory('ranges', 4, TARGETS.ranges, rangeArb());
  await runCategory('manifests', 5, TARGETS.manifests, manifestArb());
  await runCategory('protocol', 6, TARGETS.protocol, protocolArb());

  // Fixed cases every run must contain, one at a time so a failure names exactly one request.
  for (const r of [...hugeIndexes(), ...protocolFixed()]) {
    const tr = Date.now();
    const res = await send(r);
    // The server may still be finishing a request whose connection it cut: give it a moment before judging.
    if (res.status === 'closed' || !res.body.startsWith('{')) await new Promise((ok) => setTimeout(ok, 200));
    if (Date.now() - tr > 1000) console.log(`fuzz: ${short(describe(r), 120)} -> ${res.status} took ${((Date.now() - tr) / 1000).toFixed(1)} s`);
    const why = judge(r, res);
    assert.equal(why, undefined, `${describe(r)}\n    -> ${why}`);
    assert.deepEqual(await checkTree(), [], `storage tree changed by ${describe(r)} (-> ${res.status})`);
  }

  // Sessions: four properties side by side, each over sequences of hostile requests against one real upload.
  const perRun = 6;
  const lanes = 4;
  const runs = Math.ceil(TARGETS.sessions / perRun / lanes);
  const tS = Date.now();
  await Promise.all(
    Array.from({ length: lanes }, (_, lane) =>
      fc.assert(
        fc.asyncProperty(fc.array(sessionOps(), { minLength: perRun, maxLength: perRun }), async (ops) => sessionRun(ops)),
        { seed: SEED + 7 + lane, numRuns: runs, endOnFailure: true, verbose: 1 },
      ),
    ),
  );
  console.log(`fuzz: sessions: ${figures.byCategory.sessions ?? 0} requests in ${((Date.now() - tS) / 1000).toFixed(1)} s (seeds ${SEED + 7}..${SEED + 6 + lanes})`);
  assert.deepEqual(await checkTree(), [], 'the sessions category left the tree changed once its uploads were cancelled');

  // The server is up and serves the seeded images unchanged.
  assert.equal(reg.proc.exitCode, null, 'berth exited');
  assert.equal(reg.proc.signalCode, null, 'berth was killed');
  assert.equal((await fetchReq(`${reg.url}/v2/`)).status, 200);
  for (const [name, tag, img] of [['fuzz/alpha', 'v1', seeded.alpha], ['fuzz/beta', 'latest', seeded.beta]] as const) {
    const m = await fetchReq(`${reg.url}/v2/${name}/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } });
    assert.equal(m.status, 200);
    assert.equal(sha256(m.body), img.digest);
    for (const b of [img.config, img.layer]) {
      const r = await fetchReq(`${reg.url}/v2/${name}/blobs/${b.digest}`);
      assert.equal(r.status, 200);
      assert.equal(sha256(r.body), b.digest);
    }
  }
  const big = await fetchReq(`${reg.url}/v2/fuzz/alpha/blobs/${seeded.big.digest}`);
  assert.equal(sha256(big.body), seeded.big.digest);
  const idx = await fetchReq(`${reg.url}/v2/fuzz/alpha/manifests/multi`, { headers: { Accept: OCI_INDEX } });
  assert.equal(sha256(idx.body), seeded.index.digest);

  // Nothing changed inside the root (content hashes this time) nor beside it; no traversal target exists.
  assert.deepEqual(await checkTree(true), []);
  assert.deepEqual(diff(outside, snapshot(sentinel, true, root)), []);
  for (const dir of [tmpdir(), sentinel, join(sentinel, '..'), PROJECT_ROOT, '/']) {
    const hits = readdirSync(dir).filter((n) => n.includes(PWN) || n.includes('berth-fuzz-pwned'));
    assert.deepEqual(hits, [], `traversal target created in ${dir}`);
  }

  // A 4xx can hide an error the server logged ("unexpected error", a failed cleanup): there must be none.
  const problems = reg.logs().split('\n').filter((l) => /"level":(40|50|60)/.test(l));
  assert.deepEqual(problems.slice(0, 5), [], 'the server logged warnings or errors');

  const duration = (Date.now() - t0) / 1000;
  report('fuzz', {
    seed: SEED,
    requests: figures.total,
    byCategory: figures.byCategory,
    statuses: figures.statuses,
    closedByServer: figures.closedByServer,
    uploadsStartedByMountFallback,
    durationSeconds: Number(duration.toFixed(1)),
    setupSeconds: Number(((t0 - started) / 1000).toFixed(1)),
    peakRssMiB: Math.round(reg.peakRss() / MIB),
    serverCpuSeconds: serverCpu(),
    clientCpuSeconds: Number(((process.cpuUsage().user + process.cpuUsage().system) / 1e6).toFixed(1)),
  });
  assert.ok(figures.total >= pick(10_000, 100_000), `only ${figures.total} requests were sent`);
});

/** Sends raw bytes and returns what came back (status line and all). */
async function rawExchange(bytes: string, halfClose: boolean): Promise<Res> {
  return sendRaw(Buffer.from(bytes, 'latin1'), halfClose, false);
}

function uploadsOf(name: string): string[] {
  const d = join(root, 'docker/registry/v2/repositories', name, '_uploads');
  return existsSync(d) ? readdirSync(d) : [];
}

async function settled(f: () => boolean): Promise<boolean> {
  for (let i = 0; i < 100 && !f(); i++) await new Promise((r) => setTimeout(r, 100));
  return f();
}

test('regression: a failed monolithic upload leaves no upload session behind', async () => {
  const d = sha256('something else');
  const cases = [
    // Content-Length longer than the body, then our FIN: the body never completes.
    [`POST /v2/fuzz/alpha/blobs/uploads/?digest=${d} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly-some-bytes`, true],
    // Content-Length shorter than the body: the rest is a malformed second request and the connection is cut.
    [`POST /v2/fuzz/alpha/blobs/uploads/?digest=${d} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nmore-bytes-than-announced`, false],
    // An invalid chunked body.
    [`POST /v2/fuzz/alpha/blobs/uploads/?digest=${d} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\n`, true],
    // A complete body whose digest is not the one named.
    [`POST /v2/fuzz/alpha/blobs/uploads/?digest=${d} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`, false],
  ] as const;
  for (const [bytes, half] of cases) {
    const res = await rawExchange(bytes, half);
    assert.ok(res.status === 'closed' || (typeof res.status === 'number' && res.status >= 400 && res.status < 500), `${JSON.stringify(bytes)} -> ${res.status}`);
    assert.ok(await settled(() => uploadsOf('fuzz/alpha').length === 0), `${JSON.stringify(bytes)} left ${uploadsOf('fuzz/alpha').join(', ')}`);
  }
});

test('regression: hostile X-Forwarded-Proto/Host never make an invalid Location', async () => {
  const cases: Array<Record<string, string>> = [
    { 'X-Forwarded-Proto': '' },
    { 'X-Forwarded-Proto': 'javascript' },
    { 'X-Forwarded-Host': 'a b' },
    { 'X-Forwarded-Host': 'evil/../x' },
    { 'X-Forwarded-Host': '4]' },
    { 'X-Forwarded-Host': 'good.example:5000', 'X-Forwarded-Proto': 'HTTPS' },
  ];
  for (const headers of cases) {
    const r = await fetchReq(`${reg.url}/v2/fuzz/alpha/blobs/uploads/`, { method: 'POST', headers });
    assert.equal(r.status, 202);
    const loc = r.headers.get('location')!;
    const u = new URL(loc);
    assert.ok(u.protocol === 'http:' || u.protocol === 'https:', loc);
    assert.ok(u.pathname.startsWith('/v2/fuzz/alpha/blobs/uploads/'), loc);
    if (headers['X-Forwarded-Host'] === 'good.example:5000') assert.equal(u.origin, 'https://good.example:5000');
    else if (headers['X-Forwarded-Host'] !== undefined) assert.equal(u.host, `127.0.0.1:${port}`, 'an invalid forwarded host falls back to Host');
    assert.equal((await fetchReq(`${reg.url}${u.pathname}${u.search}`, { method: 'DELETE' })).status, 204);
  }
});

test('regression: an index listing one manifest 25,000 times is checked once per distinct reference', async () => {
  const a = seeded.alpha;
  const entry = JSON.stringify({ mediaType: OCI_MANIFEST, digest: a.digest, size: a.body.length });
  const body = `{"schemaVersion":2,"mediaType":"${OCI_INDEX}","manifests":[${Array.from({ length: 25_000 }, () => entry).join(',')}]}`;
  assert.ok(body.length < 4 * MIB);
  const ok = await fetchReq(`${reg.url}/v2/fuzz/alpha/manifests/dups`, { method: 'PUT', body, headers: { 'Content-Type': OCI_INDEX } });
  assert.equal(ok.status, 201, ok.body.toString());
  const withUnknown = body.replace(/\]\}$/, `,${JSON.stringify({ mediaType: OCI_MANIFEST, digest: UNKNOWN, size: 1 })},${entry}]}`);
  const bad = await fetchReq(`${reg.url}/v2/fuzz/alpha/manifests/dups2`, { method: 'PUT', body: withUnknown, headers: { 'Content-Type': OCI_INDEX } });
  assert.equal(bad.status, 400);
  const err = JSON.parse(bad.body.toString()) as { errors: Array<{ code: string; detail: { digest: string; missing: string[] } }> };
  assert.equal(err.errors[0]!.code, 'MANIFEST_BLOB_UNKNOWN');
  assert.deepEqual(err.errors[0]!.detail.missing, [UNKNOWN]);
  assert.equal((await fetchReq(`${reg.url}/v2/fuzz/alpha/manifests/dups`, { method: 'DELETE' })).status, 202);
});

test(
  'a failed monolithic upload to a new repository leaves no directory behind',
  async () => {
    const before = snapshot(root, false);
    const d = sha256('something else');
    await rawExchange(`POST /v2/fuzz/brandnew/blobs/uploads/?digest=${d} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`, false);
    await rawExchange(`POST /v2/fuzz/brandnew/blobs/uploads/?digest=${d} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\nsome`, true);
    // The aborted request's cleanup may finish after the connection is gone: the tree must come back to what it
    // was and stay so for 1.5 s (up to 10 s in all), then it is compared.
    let quiet = 0;
    for (let i = 0; i < 100 && quiet < 15; i++) {
      quiet = diff(before, snapshot(root, false)).length === 0 ? quiet + 1 : 0;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(diff(before, snapshot(root, false)), []);
    // What a client sees: the name is still unknown (NAME_UNKNOWN, not MANIFEST_UNKNOWN).
    const r = await fetchReq(`${reg.url}/v2/fuzz/brandnew/manifests/latest`);
    assert.match(r.body.toString(), /NAME_UNKNOWN/);
  },
);
