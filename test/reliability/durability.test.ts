/**
 * Durability, checked on the system calls: Berth runs under `strace -f`, and for every request acknowledged
 * with 201 or 202 the trace must show, before the acknowledgement is written to the socket:
 * - every file written for it flushed (fsync/fdatasync begun after its last write completed);
 * - every file renamed into the tree flushed before the rename;
 * - the directory receiving each rename flushed after it.
 * A SIGKILL cannot tell a flushed file from one in the page cache; this test can (docs/operations.md).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PROJECT_ROOT, freePort } from '../helpers/servers.ts';
import { OCI_MANIFEST, blob, imageManifest, req, sha256 } from '../helpers/oci.ts';
import { report } from './mode.ts';

interface Call {
  tid: string;
  name: string;
  /** The fd's path (`-y`) or the first string argument. */
  path: string;
  /** rename destination. */
  to?: string;
  /** Index of the line where the call began and where it completed. */
  start: number;
  end: number;
  text: string;
}

/** Parses `strace -f -y` output into calls with begin and end positions (threads interleave as unfinished/resumed). */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, Call>();
  text.split('\n').forEach((line, i) => {
    const m = /^(\d+)\s+(.*)$/.exec(line);
    if (!m) return;
    const [, tid, rest] = m as unknown as [string, string, string];
    const resumed = /^<\.\.\. (\w+) resumed>/.exec(rest);
    if (resumed) {
      const c = open.get(tid);
      if (c) {
        c.end = i;
        open.delete(tid);
      }
      return;
    }
    const call = /^(\w+)\((.*)$/.exec(rest);
    if (!call) return;
    const [, name, args] = call as unknown as [string, string, string];
    let path = '';
    let to: string | undefined;
    const fdPath = /^\d+<([^>]*)>/.exec(args);
    if (fdPath) path = fdPath[1]!;
    const strings = [...args.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((s) => s[1]!);
    if (name.startsWith('rename')) [path, to] = [strings[0] ?? '', strings[1]];
    const c: Call = { tid, name, path, start: i, end: i, text: rest };
    if (to !== undefined) c.to = to;
    calls.push(c);
    if (rest.includes('<unfinished ...>')) open.set(tid, c);
  });
  return calls;
}

const SYNC = new Set(['fsync', 'fdatasync']);
const WRITE = new Set(['write', 'writev', 'pwrite64', 'pwritev']);

interface Ack {
  status: number;
  index: number;
  renames: number;
  /** Pairs of renames checked for their order. */
  ordered: number;
  syncs: number;
}

/** Checks every acknowledgement in the trace against the rules above; returns what it checked. */
function checkDurability(calls: Call[], root: string): Ack[] {
  const acks: Ack[] = [];
  let segmentStart = 0;
  calls.forEach((c, idx) => {
    const status = WRITE.has(c.name) && /socket:/.test(c.path) ? /"HTTP\/1\.1 (\d{3}) /.exec(c.text)?.[1] : undefined;
    if (!status) return;
    const segment = calls.slice(segmentStart, idx);
    segmentStart = idx + 1;
    if (status !== '201' && status !== '202') return;
    const before = calls.slice(0, idx);
    const synced = (path: string, after: number): boolean => before.some((s) => SYNC.has(s.name) && s.path === path && s.start > after && s.end < c.start);
    let renames = 0;
    let ordered = 0;
    for (const w of segment.filter((x) => WRITE.has(x.name) && x.path.startsWith(root) && !x.path.includes('/.berth-tmp/'))) {
      const last = Math.max(...segment.filter((x) => WRITE.has(x.name) && x.path === w.path).map((x) => x.end));
      assert.ok(synced(w.path, last), `HTTP ${status} at line ${c.start}: ${w.path} was written but not flushed before the acknowledgement`);
    }
    const intoTree = segment.filter((x) => x.name.startsWith('rename') && x.to?.startsWith(root) && !x.to.includes('/.berth-tmp/'));
    // A manifest PUT's files in order, each visible only once the one before it is durable: a tag never lands
    // before its revision link, nor a revision link before the manifest's bytes. (A blob's data and its layer
    // link are written side by side on purpose: a link without its data names a blob not there yet.)
    const ordering = intoTree.some((r) => r.to!.includes('/_manifests/')) ? intoTree : [];
    for (let i = 1; i < ordering.length; i++) {
      const [prev, next] = [ordering[i - 1]!, ordering[i]!];
      assert.ok(
        before.some((s) => SYNC.has(s.name) && s.path === dirname(prev.to!) && s.start > prev.end && s.end < next.start),
        `HTTP ${status} at line ${c.start}: ${next.to} was renamed into place before ${prev.to} was durable`,
      );
      ordered++;
    }
    for (const r of intoTree) {
      renames++;
      const writes = before.filter((x) => WRITE.has(x.name) && x.path === r.path && x.end < r.start);
      const lastWrite = writes.length > 0 ? Math.max(...writes.map((x) => x.end)) : -1;
      assert.ok(
        before.some((s) => SYNC.has(s.name) && s.path === r.path && s.start > lastWrite && s.end < r.start),
        `HTTP ${status} at line ${c.start}: ${r.path} was renamed to ${r.to} before it was flushed`,
      );
      assert.ok(synced(dirname(r.to!), r.end), `HTTP ${status} at line ${c.start}: directory of ${r.to} not flushed after the rename`);
    }
    acks.push({ status: Number(status), index: c.start, renames, ordered, syncs: segment.filter((x) => SYNC.has(x.name)).length });
  });
  return acks;
}

function straceWorks(): boolean {
  return spawnSync('strace', ['-f', '-o', '/dev/null', 'true']).status === 0;
}

describe('reliability: acknowledged data is flushed before the acknowledgement (strace)', { timeout: 120_000 }, () => {
  let tmp: string;
  let proc: ChildProcess;
  let base: string;
  let root: string;
  let tracePath: string;
  let serverPid = 0;

  before(async () => {
    assert.ok(straceWorks(), 'strace is installed (scripts/install-test-deps.sh) and may trace its children');
    tmp = mkdtempSync(join(tmpdir(), 'berth-durability-'));
    root = join(tmp, 'data');
    tracePath = join(tmp, 'trace.txt');
    const port = await freePort();
    const cfg = join(tmp, 'config.yml');
    writeFileSync(cfg, `version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: s\n`);
    proc = spawn(
      'strace',
      ['-f', '--seccomp-bpf', '-y', '-s', '40', '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2,write,writev,pwrite64,pwritev', '-o', tracePath, process.execPath, '--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts'), 'serve', cfg],
      { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const out: string[] = [];
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`berth under strace did not start:\n${out.join('')}`)), 60_000);
      proc.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
      proc.stdout!.on('data', (d: Buffer) => {
        out.push(d.toString());
        const m = /"pid":(\d+)[^\n]*"msg":"listening"/.exec(out.join(''));
        if (m) {
          serverPid = Number(m[1]);
          clearTimeout(timer);
          ok();
        }
      });
      proc.once('exit', (code) => fail(new Error(`strace exited with ${code}:\n${out.join('')}`)));
    });
    base = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      try {
        if (serverPid) process.kill(serverPid, 'SIGKILL');
      } catch {
        // already gone
      }
      await new Promise((r) => proc.once('exit', r));
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  it('blob pushes (monolithic, chunked, mount), manifests, tags and referrers: flushed, renamed, directory flushed, then acknowledged', async () => {
    const small = blob('durable small blob');
    const big = blob(randomBytes(3 * 1024 * 1024));
    const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
    assert.equal((await req(`${base}/v2/dur/a/blobs/uploads/?digest=${small.digest}`, { method: 'POST', body: small.data })).status, 201);
    assert.equal((await req(`${base}/v2/dur/a/blobs/uploads/?digest=${config.digest}`, { method: 'POST', body: config.data })).status, 201);
    // Chunked: two PATCHes (202 each must have flushed its bytes) and the completing PUT.
    const start = await req(`${base}/v2/dur/a/blobs/uploads/`, { method: 'POST' });
    assert.equal(start.status, 202);
    let loc = new URL(start.headers.get('location')!, base);
    const half = big.size / 2;
    for (const [from, to] of [
      [0, half],
      [half, big.size],
    ] as const) {
      const r = await req(loc.toString(), { method: 'PATCH', body: big.data.subarray(from, to), headers: { 'Content-Range': `${from}-${to - 1}` } });
      assert.equal(r.status, 202);
      loc = new URL(r.headers.get('location')!, base);
    }
    loc.searchParams.set('digest', big.digest);
    assert.equal((await req(loc.toString(), { method: 'PUT' })).status, 201);
    assert.equal((await req(`${base}/v2/dur/b/blobs/uploads/?mount=${big.digest}&from=dur/a`, { method: 'POST' })).status, 201);
    const manifest = Buffer.from(JSON.stringify(imageManifest(config, [small, big])));
    assert.equal((await req(`${base}/v2/dur/a/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'Content-Type': OCI_MANIFEST } })).status, 201);
    const referrer = Buffer.from(JSON.stringify({ ...imageManifest(config, [small]), subject: { mediaType: OCI_MANIFEST, digest: sha256(manifest), size: manifest.length } }));
    assert.equal((await req(`${base}/v2/dur/a/manifests/sig`, { method: 'PUT', body: referrer, headers: { 'Content-Type': OCI_MANIFEST } })).status, 201);

    process.kill(serverPid, 'SIGKILL');
    await new Promise((r) => proc.once('exit', r));
    const calls = parseTrace(readFileSync(tracePath, 'utf8'));
    const acks = checkDurability(calls, root);
    // Every acknowledgement above was found in the trace: 5 blob/mount 201s, 3 upload 202s, 2 manifest 201s.
    assert.equal(acks.filter((a) => a.status === 201).length, 6, JSON.stringify(acks));
    assert.equal(acks.filter((a) => a.status === 202).length, 3, JSON.stringify(acks));
    // And each 201 renamed something into place (the checks above did not pass vacuously).
    for (const a of acks.filter((x) => x.status === 201)) assert.ok(a.renames > 0, JSON.stringify(a));
    // The manifest PUTs by tag put several files each (bytes, revision, [referrer,] tag index, tag): ordered.
    assert.ok(acks.filter((a) => a.ordered >= 3).length >= 2, JSON.stringify(acks));
    // The checker catches what it claims to: without the directory flushes, or without the file flushes, it fails.
    const dirs = new Set(calls.filter((x) => x.to).map((x) => dirname(x.to!)));
    assert.throws(() => checkDurability(calls.filter((x) => !(SYNC.has(x.name) && dirs.has(x.path))), root), /not flushed after the rename/);
    assert.throws(() => checkDurability(calls.filter((x) => !(x.name === 'fdatasync')), root), /flushed/);
    // Directory flushes delayed to just before each acknowledgement still pass the rules above, not the order.
    const ackAt = calls.filter((x) => WRITE.has(x.name) && /socket:/.test(x.path) && /"HTTP\/1\.1 \d{3} /.test(x.text)).map((x) => x.start);
    const late = calls.map((x) => {
      if (!(SYNC.has(x.name) && dirs.has(x.path))) return x;
      const at = ackAt.find((a) => a > x.end)!;
      return { ...x, start: at - 0.5, end: at - 0.5 };
    });
    assert.throws(() => checkDurability(late, root), /before .* was durable/);
    report('durability', {
      acknowledgements: acks.length,
      renamesChecked: acks.reduce((n, a) => n + a.renames, 0),
      syncsBeforeAcks: acks.reduce((n, a) => n + a.syncs, 0),
      tracedCalls: calls.length,
    });
  });
});
