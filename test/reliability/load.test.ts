/**
 * Load (issue 6): 200 concurrent pull clients and 20 push clients against one Berth process for a bounded
 * time (quick: 12 s; soak: 60 s). Every request's status, headers and bytes are checked (digests of whatever
 * is read, ranges against the seeded bytes); the test asserts zero failed requests and a bounded peak RSS, and
 * reports throughput and latency percentiles per request kind (never asserted: the machine is shared).
 *
 * The client is kept cheap (2 cores shared with the server and other suites): node:http with a keep-alive agent
 * (several times less CPU per request than fetch), a mix of mostly manifests, HEADs and small ranges, and a
 * full layer GET (hashed as it streams, never held) in 5% of pull iterations; pushes use 1-512 KiB blobs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { blob, imageManifest, OCI_INDEX, OCI_MANIFEST, putManifest, pushBlob, type Blob } from '../helpers/oci.ts';
import { call, check, cpuSeconds, sampleProcess, sha256, Stats } from './load-client.ts';
import { prng } from '../helpers/prng.ts';
import { pick, report } from './mode.ts';

const PULLERS = 200;
const PUSHERS = 20;
const DURATION_MS = pick(12_000, 60_000);
const REPO = 'load/app';
const ACCEPT = [OCI_MANIFEST, OCI_INDEX, 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', ');
/**
 * Peak RSS (VmHWM) bound for the server process. Measured on the 2-core dev machine: idle after seeding
 * ~86-94 MiB; under this load the peak was 184 MiB in quick mode (12 s, ~3,200 requests/s) and 222 MiB in soak
 * mode (60 s, ~4,500 requests/s), levelling off (see rssTimelineMiB in the report) rather than growing with
 * requests served. 300 MiB leaves ~35% headroom over the soak peak for GC timing on a loaded machine, yet
 * fails on any per-request or per-connection buffering of blob bytes (220 clients x a 1-4 MiB layer would be
 * 0.2-0.9 GiB) and on a leak that grows with the ~40,000-270,000 requests of a run.
 */
const PEAK_RSS_BOUND_MIB = 300;

interface Image {
  tag: string;
  digest: string;
  body: Buffer;
  config: Blob;
  layers: Blob[];
}

interface Seed {
  images: Image[];
  index: { tag: string; digest: string; body: Buffer; children: Image[] };
  tags: string[];
}

async function seed(url: string): Promise<Seed> {
  const KiB = 1024;
  const layers = [64 * KiB, 256 * KiB, 1024 * KiB, 4096 * KiB].map((n) => blob(randomBytes(n)));
  const [l64, l256, l1m, l4m] = layers as [Blob, Blob, Blob, Blob];
  for (const l of layers) await pushBlob(url, REPO, l);
  const images: Image[] = [];
  const sets = [[l64, l1m], [l256, l4m], [l64, l256]];
  for (const [i, ls] of sets.entries()) {
    const config = blob(JSON.stringify({ architecture: i === 1 ? 'arm64' : 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: ls.map((l) => l.digest) } }));
    await pushBlob(url, REPO, config);
    const m = imageManifest(config, ls);
    const r = await putManifest(url, REPO, `v${i}`, m);
    assert.equal(r.status, 201, r.body.toString());
    images.push({ tag: `v${i}`, digest: r.digest, body: Buffer.from(JSON.stringify(m)), config, layers: ls });
  }
  const children = images.slice(0, 2);
  const idx = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: children.map((c, i) => ({ mediaType: OCI_MANIFEST, digest: c.digest, size: c.body.length, platform: { architecture: i === 1 ? 'arm64' : 'amd64', os: 'linux' } })),
  };
  const r = await putManifest(url, REPO, 'multi', idx, OCI_INDEX);
  assert.equal(r.status, 201, r.body.toString());
  return { images, index: { tag: 'multi', digest: r.digest, body: Buffer.from(JSON.stringify(idx)), children }, tags: ['multi', 'v0', 'v1', 'v2'] };
}

function manifestOk(want: { digest: string; body: Buffer }) {
  return (r: { status: number; headers: Headers; body: Buffer }) => {
    check(r.status === 200, `status ${r.status} ${r.body.toString().slice(0, 200)}`);
    check(r.headers.get('docker-content-digest') === want.digest, `Docker-Content-Digest ${r.headers.get('docker-content-digest')}, want ${want.digest}`);
    check(r.body.equals(want.body), `manifest body differs (${r.body.length} bytes, digest ${sha256(r.body)})`);
  };
}

async function puller(url: string, s: Seed, stats: Stats, id: number, until: number): Promise<number> {
  const rand = prng(id * 7919 + 1);
  const pickOf = <T>(a: T[]): T => a[Math.floor(rand() * a.length)]!;
  let iterations = 0;
  while (Date.now() < until) {
    iterations++;
    const useIndex = rand() < 0.2;
    let img: Image;
    if (useIndex) {
      await call(stats, 'manifest-get', `${url}/v2/${REPO}/manifests/${s.index.tag}`, { headers: { Accept: ACCEPT } }, manifestOk(s.index));
      img = pickOf(s.index.children);
      await call(stats, 'manifest-get', `${url}/v2/${REPO}/manifests/${img.digest}`, { headers: { Accept: ACCEPT } }, manifestOk(img));
    } else {
      img = pickOf(s.images);
      if (rand() < 0.2) {
        await call(stats, 'manifest-head', `${url}/v2/${REPO}/manifests/${img.tag}`, { method: 'HEAD', headers: { Accept: ACCEPT } }, (r) => {
          check(r.status === 200, `status ${r.status}`);
          check(r.headers.get('docker-content-digest') === img.digest, `Docker-Content-Digest ${r.headers.get('docker-content-digest')}`);
          check(r.headers.get('content-length') === String(img.body.length), `Content-Length ${r.headers.get('content-length')}`);
        });
      } else {
        await call(stats, 'manifest-get', `${url}/v2/${REPO}/manifests/${img.tag}`, { headers: { Accept: ACCEPT } }, manifestOk(img));
      }
    }
    await call(stats, 'blob-get-small', `${url}/v2/${REPO}/blobs/${img.config.digest}`, {}, (r) => {
      check(r.status === 200, `status ${r.status}`);
      check(r.body.equals(img.config.data), `config bytes differ (${r.body.length} bytes)`);
    });
    const layer = pickOf(img.layers);
    const x = rand();
    if (x < 0.25) {
      const len = 1 + Math.floor(rand() * 64 * 1024);
      const start = Math.floor(rand() * (layer.size - len));
      const end = start + len - 1;
      await call(stats, 'blob-range', `${url}/v2/${REPO}/blobs/${layer.digest}`, { headers: { Range: `bytes=${start}-${end}` } }, (r) => {
        check(r.status === 206, `status ${r.status}`);
        check(r.headers.get('content-range') === `bytes ${start}-${end}/${layer.size}`, `Content-Range ${r.headers.get('content-range')}`);
        check(r.body.equals(layer.data.subarray(start, end + 1)), `range ${start}-${end} bytes differ (${r.body.length} bytes)`);
      });
    } else if (x < 0.3) {
      await call(stats, 'blob-get-full', `${url}/v2/${REPO}/blobs/${layer.digest}`, { hashBody: true }, (r) => {
        check(r.status === 200, `status ${r.status}`);
        check(r.size === layer.size && r.digest === layer.digest, `layer read back as ${r.size} bytes ${r.digest}, want ${layer.size} ${layer.digest}`);
      });
    } else {
      await call(stats, 'blob-head', `${url}/v2/${REPO}/blobs/${layer.digest}`, { method: 'HEAD' }, (r) => {
        check(r.status === 200, `status ${r.status}`);
        check(r.headers.get('content-length') === String(layer.size), `Content-Length ${r.headers.get('content-length')}`);
        check(r.headers.get('docker-content-digest') === layer.digest, `Docker-Content-Digest ${r.headers.get('docker-content-digest')}`);
      });
    }
    if (rand() < 0.1) {
      await call(stats, 'tags-list', `${url}/v2/${REPO}/tags/list`, {}, (r) => {
        check(r.status === 200, `status ${r.status}`);
        const tags = (JSON.parse(r.body.toString()) as { tags: string[] }).tags;
        check(JSON.stringify(tags) === JSON.stringify(s.tags), `tags ${JSON.stringify(tags)}`);
      });
    }
  }
  return iterations;
}

function created(digest: string) {
  return (r: { status: number; headers: Headers; body: Buffer }) => {
    check(r.status === 201, `status ${r.status} ${r.body.toString().slice(0, 200)}`);
    check(r.headers.get('docker-content-digest') === digest, `Docker-Content-Digest ${r.headers.get('docker-content-digest')}, want ${digest}`);
  };
}

async function pusher(url: string, stats: Stats, id: number, until: number): Promise<number> {
  const rand = prng(id * 104729 + 3);
  const repo = `load/push${id % 4}`;
  let n = 0;
  while (Date.now() < until) {
    n++;
    const layer = blob(randomBytes(1024 + Math.floor(rand() * 511 * 1024)));
    if (n % 2 === 1) {
      await call(stats, 'upload-monolithic', `${url}/v2/${repo}/blobs/uploads/?digest=${layer.digest}`, { method: 'POST', body: layer.data, headers: { 'Content-Type': 'application/octet-stream' } }, created(layer.digest));
    } else {
      const start = await call(stats, 'upload-start', `${url}/v2/${repo}/blobs/uploads/`, { method: 'POST' }, (r) => {
        check(r.status === 202, `status ${r.status}`);
        check(r.headers.get('location'), 'no Location');
      });
      if (!start) continue;
      let loc = new URL(start.headers.get('location')!, url).toString();
      const chunks = 2 + Math.floor(rand() * 2);
      const step = Math.ceil(layer.size / chunks);
      let ok = true;
      for (let off = 0; off < layer.size && ok; off += step) {
        const end = Math.min(off + step, layer.size);
        const r = await call(stats, 'upload-patch', loc, { method: 'PATCH', body: layer.data.subarray(off, end), headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${off}-${end - 1}` } }, (r) => {
          check(r.status === 202, `status ${r.status} ${r.body.toString().slice(0, 200)}`);
          check(r.headers.get('range') === `0-${end - 1}`, `Range ${r.headers.get('range')}`);
        });
        if (!r) ok = false;
        else loc = new URL(r.headers.get('location')!, url).toString();
      }
      if (!ok) continue;
      const u = new URL(loc);
      u.searchParams.set('digest', layer.digest);
      if (!(await call(stats, 'upload-complete', u.toString(), { method: 'PUT' }, created(layer.digest)))) continue;
    }
    const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', pusher: id, n }));
    await call(stats, 'upload-monolithic', `${url}/v2/${repo}/blobs/uploads/?digest=${config.digest}`, { method: 'POST', body: config.data, headers: { 'Content-Type': 'application/octet-stream' } }, created(config.digest));
    const body = Buffer.from(JSON.stringify(imageManifest(config, [layer])));
    const digest = sha256(body);
    const tag = `c${id}-${n}`;
    if (!(await call(stats, 'manifest-put', `${url}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body, headers: { 'Content-Type': OCI_MANIFEST } }, created(digest)))) continue;
    await call(stats, 'manifest-get', `${url}/v2/${repo}/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } }, manifestOk({ digest, body }));
    await call(stats, 'blob-get-pushed', `${url}/v2/${repo}/blobs/${layer.digest}`, { hashBody: true }, (r) => {
      check(r.status === 200, `status ${r.status}`);
      check(r.size === layer.size && r.digest === layer.digest, `layer read back as ${r.size} bytes ${r.digest}`);
    });
  }
  return n;
}

test(`load: ${PULLERS} pull and ${PUSHERS} push clients for ${DURATION_MS / 1000} s: no failed request, bounded memory`, async () => {
  const reg: RunningRegistry = await startBerth({ env: { REGISTRY_LOG_ACCESSLOG_DISABLED: 'true' } });
  try {
    const s = await seed(reg.url);
    const stats = new Stats();
    const idleRssMiB = sampleProcess(reg.proc.pid!).stop().peakRssMiB;
    const sampler = sampleProcess(reg.proc.pid!);
    const serverCpu0 = cpuSeconds(reg.proc.pid!);
    const clientCpu0 = process.cpuUsage();
    const t0 = Date.now();
    const until = t0 + DURATION_MS;
    const [pulls, pushes] = await Promise.all([
      Promise.all(Array.from({ length: PULLERS }, (_, i) => puller(reg.url, s, stats, i, until))),
      Promise.all(Array.from({ length: PUSHERS }, (_, i) => pusher(reg.url, stats, i, until))),
    ]);
    const elapsedS = (Date.now() - t0) / 1000;
    const mem = sampler.stop();
    const serverCpuS = Math.round((cpuSeconds(reg.proc.pid!) - serverCpu0) * 10) / 10;
    const clientCpu = process.cpuUsage(clientCpu0);
    const clientCpuS = Math.round((clientCpu.user + clientCpu.system) / 1e5) / 10;
    const hwmMiB = Math.round((reg.peakRss() / 2 ** 20) * 10) / 10;
    const summary = stats.summary();
    const perKind: Record<string, string> = {};
    for (const [k, v] of Object.entries(summary)) perKind[k] = `n=${v.n} p50=${v.p50} p90=${v.p90} p99=${v.p99} max=${v.max} ms`;
    report('load', {
      clients: { pull: PULLERS, push: PUSHERS },
      durationS: Math.round(elapsedS * 10) / 10,
      requests: stats.attempts,
      failures: stats.failureCount,
      rps: Math.round(stats.requests / elapsedS),
      pullIterations: pulls.reduce((a, b) => a + b, 0),
      pushIterations: pushes.reduce((a, b) => a + b, 0),
      maxInFlight: stats.maxInFlight,
      serverPeakFds: mem.peakFds,
      latencyMs: perKind,
      serverCpuS,
      clientCpuS,
      rssIdleMiB: idleRssMiB,
      rssSampledPeakMiB: mem.peakRssMiB,
      rssTimelineMiB: Array.from({ length: 10 }, (_, i) => Math.round(mem.rssMiB[Math.floor(((i + 1) * (mem.rssMiB.length - 1)) / 10)] ?? 0)),
      rssEndMiB: mem.lastRssMiB,
      peakRssMiB: hwmMiB,
    });
    assert.equal(stats.failureCount, 0, `failed requests:\n${stats.failures.map((f) => `${f.kind}: ${f.reason}`).join('\n')}`);
    // The loops really were concurrent: every client had a request in flight at once at some point.
    assert.ok(stats.maxInFlight >= PULLERS + PUSHERS - 5, `max in flight ${stats.maxInFlight}`);
    assert.equal(reg.proc.exitCode, null, 'server exited');
    const errors = reg.logs().split('\n').filter((l) => /"level":(50|60)/.test(l));
    assert.deepEqual(errors, [], 'server logged errors');
    assert.ok(hwmMiB < PEAK_RSS_BOUND_MIB, `server peak RSS ${hwmMiB} MiB >= ${PEAK_RSS_BOUND_MIB} MiB`);
  } finally {
    await reg.stop();
  }
});
