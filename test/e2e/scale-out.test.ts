/**
 * Stateless scale-out, end to end: three Berth instances share an S3-protocol server (s3rver) and a Redis
 * blob-descriptor cache, behind a round-robin TCP balancer. skopeo pushes and pulls multi-layer images through
 * the balancer; a chunked upload sends each PATCH on a new connection so they land on different instances;
 * one instance is killed mid-run (during a skopeo push and in the middle of the chunked upload) and the
 * others finish the work. Every digest must round-trip.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBerth, startS3, type RunningRegistry, type RunningS3 } from '../helpers/servers.ts';
import { startRedis, type RunningRedis } from '../helpers/redis.ts';
import { startBalancer, type Balancer } from '../helpers/balancer.ts';
import { buildImage, buildMultiArch, layoutDigest, type BuiltImage, type BuiltIndex, type BuiltSource } from '../helpers/images.ts';
import { rawDigest, skopeoCopy } from '../helpers/run.ts';
import { blob, errorCode, req, sha256 } from '../helpers/oci.ts';

let tmp: string;
let s3: RunningS3;
let redis: RunningRedis;
let berths: RunningRegistry[] = [];
const replaced: RunningRegistry[] = [];
let lb: Balancer;
let app: BuiltSource<BuiltImage>;
let big: BuiltSource<BuiltImage>;
let multi: BuiltSource<BuiltIndex>;

const SECRET = 'scale-out-shared-secret';
let configFor: (port: number) => string;

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'berth-scale-'));
  [s3, redis] = await Promise.all([startS3(), startRedis()]);
  configFor = (port: number): string => `version: 0.1
log:
  level: info
storage:
${s3.storageYaml('/scale')}  delete:
    enabled: true
  cache:
    blobdescriptor: redis
redis:
  addr: ${redis.addr}
http:
  addr: 127.0.0.1:${port}
  secret: ${SECRET}
`;
  berths = await Promise.all([0, 1, 2].map(() => startBerth({ configYaml: configFor(0) })));
  lb = await startBalancer(berths.map((b) => b.port));
  app = buildImage(join(tmp, 'src-app'), 'v1', { layers: 4, layerSize: 256 * 1024, seed: 'scale-app' });
  big = buildImage(join(tmp, 'src-big'), 'v1', { layers: 3, layerSize: 6 * 1024 * 1024, seed: 'scale-big' });
  multi = buildMultiArch(join(tmp, 'src-multi'), 'v1', { seed: 'scale-multi', layerSize: 64 * 1024 });
});

after(async () => {
  await lb?.stop();
  await Promise.all([...berths, ...replaced].map((b) => b.stop()));
  await Promise.all([s3?.stop(), redis?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** One request on its own connection, so the balancer picks the next instance for each. */
function call(method: string, url: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((ok, fail) => {
    const r = request(url, { method, agent: false, headers: { ...headers, 'Content-Length': String(body?.length ?? 0) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    r.on('error', fail);
    r.end(body);
  });
}

const ref = (repoTag: string): string => `docker://${lb.host}/${repoTag}`;

describe('three instances on shared S3 + Redis behind a balancer', () => {
  test('skopeo pushes a multi-layer image and an index through the balancer and pulls them back', async () => {
    await skopeoCopy(app.src, ref('scale/app:v1'));
    await skopeoCopy(multi.src, ref('scale/multi:v1'), '--all');
    assert.equal(await rawDigest(ref('scale/app:v1')), app.built.desc.digest);
    assert.equal(await rawDigest(ref('scale/multi:v1')), multi.built.desc.digest);
    const out = join(tmp, 'out-app');
    await skopeoCopy(ref('scale/app:v1'), `oci:${out}:v1`);
    assert.equal(layoutDigest(out, 'v1'), app.built.desc.digest);
    const outMulti = join(tmp, 'out-multi');
    await skopeoCopy(ref('scale/multi:v1'), `oci:${outMulti}:v1`, '--all');
    assert.equal(layoutDigest(outMulti, 'v1'), multi.built.desc.digest);
    assert.ok(lb.connections.every((n) => n > 0), `every instance served connections: ${lb.connections.join(', ')}`);
    // Every instance answers for content any other one stored.
    for (const b of berths) {
      const m = await req(`${b.url}/v2/scale/app/manifests/v1`, { headers: { Accept: app.built.desc.mediaType } });
      assert.equal(sha256(m.body), app.built.desc.digest);
    }
  });

  test('a chunked upload spread over the instances completes after one of them is killed half-way', async () => {
    const data = Buffer.alloc(24 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 512) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    const b = blob(data);
    const start = await call('POST', `${lb.url}/v2/scale/chunked/blobs/uploads/`);
    assert.equal(start.status, 202);
    let loc = new URL(start.headers.location as string, lb.url).toString();
    const uuid = start.headers['docker-upload-uuid'] as string;
    const step = 4 * 1024 * 1024;
    for (let off = 0; off < data.length; off += step) {
      if (off === 2 * step) {
        // The instance that will not come back: SIGKILL, no drain.
        berths[1]!.proc.kill('SIGKILL');
        await new Promise((r) => berths[1]!.proc.once('exit', r));
      }
      const p = await call('PATCH', loc, data.subarray(off, off + step), { 'Content-Range': `${off}-${off + step - 1}`, 'Content-Type': 'application/octet-stream' });
      assert.equal(p.status, 202, `PATCH at ${off}: ${p.body.toString()}`);
      assert.equal(p.headers.range, `0-${off + step - 1}`);
      loc = new URL(p.headers.location as string, lb.url).toString();
    }
    const u = new URL(loc);
    u.searchParams.set('digest', b.digest);
    const put = await call('PUT', u.toString());
    assert.equal(put.status, 201, put.body.toString());
    const got = await call('GET', `${lb.url}/v2/scale/chunked/blobs/${b.digest}`);
    // Blob reads redirect to the S3 server's presigned URL.
    assert.equal(got.status, 307);
    const bytes = await fetch(got.headers.location as string);
    assert.equal(sha256(Buffer.from(await bytes.arrayBuffer())), b.digest);
    const handledBy = berths.filter((r) => r.logs().split('\n').some((l) => l.includes('"method":"PATCH"') && l.includes(uuid)));
    assert.ok(handledBy.length >= 2, `PATCHes of one upload were served by ${handledBy.length} instances`);
  });

  test('a replacement instance joins with nothing but the config; another dies during a skopeo push that still completes', async () => {
    replaced.push(berths[1]!);
    berths[1] = await startBerth({ configYaml: configFor(berths[1]!.port) });
    assert.equal((await req(`${berths[1]!.url}/v2/scale/app/manifests/v1`, { method: 'HEAD', headers: { Accept: app.built.desc.mediaType } })).status, 200);
    // Another instance dies while skopeo pushes; skopeo's retries land on the survivors.
    const victim = berths[2]!;
    const push = skopeoCopy(big.src, ref('scale/big:v1'), '--retry-times', '3');
    await new Promise((r) => setTimeout(r, 400));
    victim.proc.kill('SIGKILL');
    await push;
    const out = join(tmp, 'out-big');
    await skopeoCopy(ref('scale/big:v1'), `oci:${out}:v1`, '--retry-times', '3');
    assert.equal(layoutDigest(out, 'v1'), big.built.desc.digest);
    const outApp = join(tmp, 'out-app-2');
    await skopeoCopy(ref('scale/app:v1'), `oci:${outApp}:v1`);
    assert.equal(layoutDigest(outApp, 'v1'), app.built.desc.digest);
  });

  test('a tampered upload token is refused by every instance', async () => {
    const start = await call('POST', `${lb.url}/v2/scale/tamper/blobs/uploads/`);
    const u = new URL(start.headers.location as string, lb.url);
    const state = u.searchParams.get('_state')!;
    u.searchParams.set('_state', state.slice(0, -4) + (state.endsWith('AAAA') ? 'BBBB' : 'AAAA'));
    const r = await call('PATCH', u.toString(), Buffer.from('x'));
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'BLOB_UPLOAD_INVALID');
  });

  test('a delete through one instance is seen by the others at once (shared cache invalidated), and a re-push works', async () => {
    const alive = berths.filter((b) => b.proc.exitCode === null && b.proc.signalCode === null);
    const layer = app.built.layers[0]!.desc.digest;
    for (const b of alive) assert.equal((await req(`${b.url}/v2/scale/app/blobs/${layer}`, { method: 'HEAD' })).status, 307);
    assert.equal((await req(`${alive[0]!.url}/v2/scale/app/blobs/${layer}`, { method: 'DELETE' })).status, 202);
    for (const b of alive) assert.equal((await req(`${b.url}/v2/scale/app/blobs/${layer}`, { method: 'HEAD' })).status, 404);
    assert.equal((await req(`${alive[1]!.url}/v2/scale/app/manifests/${app.built.desc.digest}`, { method: 'DELETE' })).status, 202);
    for (const b of alive) assert.equal((await req(`${b.url}/v2/scale/app/manifests/v1`, { method: 'HEAD' })).status, 404);
    await skopeoCopy(app.src, ref('scale/app:v1'));
    for (const b of alive) assert.equal((await req(`${b.url}/v2/scale/app/blobs/${layer}`, { method: 'HEAD' })).status, 307);
    assert.equal(await rawDigest(ref('scale/app:v1')), app.built.desc.digest);
  });
});
