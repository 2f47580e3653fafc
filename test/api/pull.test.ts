/** Black-box tests of end-1, end-2, end-3 (pull) and manifest push end-7 over real HTTP. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { DOCKER_LIST, DOCKER_MANIFEST, EMPTY_CONFIG, OCI_INDEX, OCI_MANIFEST, blob, errorCode, imageManifest, pushBlob, pushImage, putManifest, req, sha256 } from '../helpers/oci.ts';

let reg: RunningRegistry;
let base: string;
before(async () => {
  reg = await startBerth();
  base = reg.url;
});
after(async () => {
  await reg.stop();
});

describe('base and pull', () => {
  test('end-1: GET /v2/ returns 200 {} with the API version header', async () => {
    const r = await req(`${base}/v2/`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), {});
    assert.equal(r.headers.get('docker-distribution-api-version'), 'registry/2.0');
    const r2 = await req(`${base}/v2`);
    assert.equal(r2.status, 200);
  });

  test('every response, errors included, carries Docker-Distribution-API-Version', async () => {
    const r = await req(`${base}/v2/nope/manifests/latest`);
    assert.equal(r.status, 404);
    assert.equal(r.headers.get('docker-distribution-api-version'), 'registry/2.0');
    const r2 = await req(`${base}/nothing-here`);
    assert.equal(r2.status, 404);
    assert.equal(r2.headers.get('docker-distribution-api-version'), 'registry/2.0');
  });

  test('end-2: GET and HEAD a blob with digest, length, ETag and cache headers', async () => {
    const b = blob('pull me please');
    await pushBlob(base, 'pull/blob', b);
    const h = await req(`${base}/v2/pull/blob/blobs/${b.digest}`, { method: 'HEAD' });
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('content-length'), String(b.size));
    assert.equal(h.headers.get('docker-content-digest'), b.digest);
    assert.equal(h.headers.get('etag'), `"${b.digest}"`);
    assert.equal(h.headers.get('accept-ranges'), 'bytes');
    assert.match(h.headers.get('cache-control') ?? '', /max-age=\d+/);
    assert.equal(h.body.length, 0);
    const g = await req(`${base}/v2/pull/blob/blobs/${b.digest}`);
    assert.deepEqual(g.body, b.data);
    const nm = await req(`${base}/v2/pull/blob/blobs/${b.digest}`, { headers: { 'If-None-Match': `"${b.digest}"` } });
    assert.equal(nm.status, 304);
  });

  test('end-2: Range requests return 206, suffix ranges work, unsatisfiable ranges 416', async () => {
    const b = blob('0123456789');
    await pushBlob(base, 'pull/range', b);
    const url = `${base}/v2/pull/range/blobs/${b.digest}`;
    const r = await req(url, { headers: { Range: 'bytes=2-5' } });
    assert.equal(r.status, 206);
    assert.equal(r.body.toString(), '2345');
    assert.equal(r.headers.get('content-range'), 'bytes 2-5/10');
    assert.equal((await req(url, { headers: { Range: 'bytes=7-' } })).body.toString(), '789');
    assert.equal((await req(url, { headers: { Range: 'bytes=-3' } })).body.toString(), '789');
    assert.equal((await req(url, { headers: { Range: 'bytes=5-100' } })).body.toString(), '56789');
    const bad = await req(url, { headers: { Range: 'bytes=10-20' } });
    assert.equal(bad.status, 416);
    assert.equal(bad.headers.get('content-range'), 'bytes */10');
    assert.equal((await req(url, { headers: { Range: 'bytes=5-2' } })).status, 416);
    assert.equal((await req(url, { headers: { Range: 'bytes=0-1,3-4' } })).status, 416);
  });

  test('end-2: a multi-megabyte blob streams whole and in ranges across buffer boundaries', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 123);
    for (let i = 0; i + 4 <= data.length; i += 4) data.writeUInt32BE(i, i);
    const b = blob(data);
    await pushBlob(base, 'pull/large', b);
    const url = `${base}/v2/pull/large/blobs/${b.digest}`;
    assert.equal(sha256((await req(url)).body), b.digest);
    for (const [s, e] of [[0, 1024 * 1024], [1024 * 1024 - 5, 2 * 1024 * 1024 + 7], [data.length - 10, data.length - 1]] as const) {
      const r = await req(url, { headers: { Range: `bytes=${s}-${e}` } });
      assert.equal(r.status, 206);
      assert.deepEqual(r.body, data.subarray(s, e + 1));
    }
  });

  test('end-2: clients that hang up mid-download leak no descriptors and the server keeps serving', async () => {
    const data = Buffer.alloc(8 * 1024 * 1024, 5);
    const b = blob(data);
    await pushBlob(base, 'pull/abort', b);
    const { readdirSync } = await import('node:fs');
    const fds = (): number => readdirSync(`/proc/${reg.proc.pid}/fd`).length;
    const before = fds();
    for (let i = 0; i < 10; i++) {
      const ac = new AbortController();
      const r = await fetch(`${base}/v2/pull/abort/blobs/${b.digest}`, { signal: ac.signal });
      const reader = r.body!.getReader();
      await reader.read();
      ac.abort();
      await reader.cancel().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(fds() <= before + 2, `descriptors: ${before} before, ${fds()} after`);
    assert.equal(sha256((await req(`${base}/v2/pull/abort/blobs/${b.digest}`)).body), b.digest);
  });

  test('end-2: unknown blob is BLOB_UNKNOWN; blob of another repository is not served', async () => {
    const r = await req(`${base}/v2/pull/blob/blobs/${sha256('missing')}`);
    assert.equal(r.status, 404);
    assert.equal(errorCode(r.body), 'BLOB_UNKNOWN');
    const b = blob('private to a');
    await pushBlob(base, 'iso/a', b);
    assert.equal((await req(`${base}/v2/iso/b/blobs/${b.digest}`)).status, 404);
  });

  test('end-2: malformed digest is DIGEST_INVALID; malformed name is NAME_INVALID', async () => {
    const r = await req(`${base}/v2/pull/blob/blobs/sha256:xyz`);
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'DIGEST_INVALID');
    const n = await req(`${base}/v2/Bad_Name/blobs/${sha256('x')}`);
    assert.equal(n.status, 400);
    assert.equal(errorCode(n.body), 'NAME_INVALID');
  });

  test('end-7/end-3: PUT an OCI manifest by tag, GET and HEAD it by tag and digest with exact bytes', async () => {
    const img = await pushImage(base, 'pull/img', 'v1');
    for (const ref of ['v1', img.digest]) {
      const g = await req(`${base}/v2/pull/img/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
      assert.equal(g.status, 200);
      assert.deepEqual(g.body, img.body);
      assert.equal(g.headers.get('content-type'), OCI_MANIFEST);
      assert.equal(g.headers.get('docker-content-digest'), img.digest);
      assert.equal(g.headers.get('etag'), `"${img.digest}"`);
      const h = await req(`${base}/v2/pull/img/manifests/${ref}`, { method: 'HEAD' });
      assert.equal(h.status, 200);
      assert.equal(h.headers.get('content-length'), String(img.body.length));
      assert.equal(h.body.length, 0);
    }
  });

  test('end-7: PUT returns Location and Docker-Content-Digest; storage matches distribution layout', async () => {
    const config = blob('{"a":1}');
    await pushBlob(base, 'layout/img', config);
    const r = await putManifest(base, 'layout/img', 'latest', imageManifest(config, []));
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('docker-content-digest'), r.digest);
    assert.match(r.headers.get('location') ?? '', new RegExp(`/v2/layout/img/manifests/${r.digest}$`));
    const hex = r.digest.slice(7);
    const v2 = join(reg.root, 'docker/registry/v2');
    assert.equal(readFileSync(join(v2, `repositories/layout/img/_manifests/tags/latest/current/link`), 'utf8'), r.digest);
    assert.equal(readFileSync(join(v2, `repositories/layout/img/_manifests/tags/latest/index/sha256/${hex}/link`), 'utf8'), r.digest);
    assert.equal(readFileSync(join(v2, `repositories/layout/img/_manifests/revisions/sha256/${hex}/link`), 'utf8'), r.digest);
    assert.equal(sha256(readFileSync(join(v2, `blobs/sha256/${hex.slice(0, 2)}/${hex}/data`))), r.digest);
    assert.equal(readFileSync(join(v2, `repositories/layout/img/_layers/sha256/${config.digest.slice(7)}/link`), 'utf8'), config.digest);
  });

  test('end-7: PUT by digest; a digest that does not match the body is DIGEST_INVALID', async () => {
    const config = blob('{"b":2}');
    await pushBlob(base, 'bydigest/img', config);
    const m = imageManifest(config, []);
    const d = sha256(JSON.stringify(m));
    assert.equal((await putManifest(base, 'bydigest/img', d, m)).status, 201);
    const wrong = await putManifest(base, 'bydigest/img', sha256('other'), m);
    assert.equal(wrong.status, 400);
    assert.equal(errorCode(wrong.body), 'DIGEST_INVALID');
  });

  test('end-7: Docker schema2 manifest and manifest list, OCI index', async () => {
    const config = blob('{"arch":"x"}');
    const layer = blob('docker layer');
    await pushBlob(base, 'formats/d', config);
    await pushBlob(base, 'formats/d', layer);
    const dm = {
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: config.digest, size: config.size },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: layer.digest, size: layer.size }],
    };
    const r1 = await putManifest(base, 'formats/d', 'docker', dm, DOCKER_MANIFEST);
    assert.equal(r1.status, 201);
    const list = { schemaVersion: 2, mediaType: DOCKER_LIST, manifests: [{ mediaType: DOCKER_MANIFEST, digest: r1.digest, size: Buffer.byteLength(JSON.stringify(dm)), platform: { architecture: 'amd64', os: 'linux' } }] };
    const r2 = await putManifest(base, 'formats/d', 'list', list, DOCKER_LIST);
    assert.equal(r2.status, 201);
    assert.equal((await req(`${base}/v2/formats/d/manifests/list`)).headers.get('content-type'), DOCKER_LIST);
    assert.equal((await req(`${base}/v2/formats/d/manifests/docker`)).headers.get('content-type'), DOCKER_MANIFEST);
    const idx = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: DOCKER_MANIFEST, digest: r1.digest, size: 1 }] };
    assert.equal((await putManifest(base, 'formats/d', 'index', idx, OCI_INDEX)).status, 201);
  });

  test('end-7: manifests referencing unknown blobs or manifests are MANIFEST_BLOB_UNKNOWN', async () => {
    const config = blob('{"c":3}');
    await pushBlob(base, 'refs/img', config);
    const missingLayer = blob('never pushed');
    const r = await putManifest(base, 'refs/img', 'bad', imageManifest(config, [missingLayer]));
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'MANIFEST_BLOB_UNKNOWN');
    const idx = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256('nope'), size: 5 }] };
    const r2 = await putManifest(base, 'refs/img', 'badidx', idx, OCI_INDEX);
    assert.equal(errorCode(r2.body), 'MANIFEST_BLOB_UNKNOWN');
    const other = blob('in another repo');
    await pushBlob(base, 'refs/other', other);
    const r3 = await putManifest(base, 'refs/img', 'cross', imageManifest(other, []));
    assert.equal(errorCode(r3.body), 'MANIFEST_BLOB_UNKNOWN', 'blobs must be linked into this repository');
  });

  test('end-7: invalid JSON, wrong schema, mismatched Content-Type are MANIFEST_INVALID', async () => {
    const bad = async (body: string, ct = OCI_MANIFEST): Promise<string | undefined> => {
      const r = await req(`${base}/v2/invalid/img/manifests/t`, { method: 'PUT', body, headers: { 'Content-Type': ct } });
      assert.equal(r.status, 400, body);
      return errorCode(r.body);
    };
    assert.equal(await bad('{not json'), 'MANIFEST_INVALID');
    assert.equal(await bad('[]'), 'MANIFEST_INVALID');
    assert.equal(await bad('{"schemaVersion":1}'), 'MANIFEST_INVALID');
    assert.equal(await bad('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}'), 'MANIFEST_INVALID');
    assert.equal(await bad(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }), OCI_MANIFEST), 'MANIFEST_INVALID');
    assert.equal(await bad('{"schemaVersion":2,"mediaType":"text/plain"}', 'text/plain'), 'MANIFEST_INVALID');
    let deep = '1';
    for (let i = 0; i < 200; i++) deep = `[${deep}]`;
    assert.equal(await bad(`{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","annotations":${deep}}`), 'MANIFEST_INVALID');
  });

  test('end-7: a manifest above 4 MiB is rejected with 413', async () => {
    const body = Buffer.alloc(4 * 1024 * 1024 + 10, 0x20);
    const r = await req(`${base}/v2/big/img/manifests/t`, { method: 'PUT', body, headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(r.status, 413);
    assert.equal(errorCode(r.body), 'MANIFEST_INVALID');
  });

  test('end-7: an invalid tag is TAG_INVALID', async () => {
    const r = await req(`${base}/v2/tags/img/manifests/-bad`, { method: 'PUT', body: '{}', headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'TAG_INVALID');
  });

  test('end-3: unknown manifest is MANIFEST_UNKNOWN; unknown repository is NAME_UNKNOWN', async () => {
    await pushImage(base, 'known/repo', 'v1');
    const r = await req(`${base}/v2/known/repo/manifests/v2`);
    assert.equal(r.status, 404);
    assert.equal(errorCode(r.body), 'MANIFEST_UNKNOWN');
    const r2 = await req(`${base}/v2/known/repo/manifests/${sha256('none')}`);
    assert.equal(errorCode(r2.body), 'MANIFEST_UNKNOWN');
    const r3 = await req(`${base}/v2/unknown/repo/manifests/v1`);
    assert.equal(r3.status, 404);
    assert.equal(errorCode(r3.body), 'NAME_UNKNOWN');
  });

  test('end-7: artifacts with artifactType and the empty config', async () => {
    const empty = blob('{}');
    await pushBlob(base, 'art/repo', empty);
    const payload = blob('signature bytes');
    await pushBlob(base, 'art/repo', payload);
    const m = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/vnd.example.sig',
      config: { mediaType: EMPTY_CONFIG, digest: empty.digest, size: 2 },
      layers: [{ mediaType: 'application/octet-stream', digest: payload.digest, size: payload.size }],
    };
    const r = await putManifest(base, 'art/repo', 'sig', m);
    assert.equal(r.status, 201);
  });

  test('unknown routes are 404 and wrong methods 405 UNSUPPORTED', async () => {
    assert.equal((await req(`${base}/v2/a/unknown/thing`)).status, 404);
    const r = await req(`${base}/v2/`, { method: 'POST' });
    assert.equal(r.status, 405);
    assert.equal(errorCode(r.body), 'UNSUPPORTED');
  });

  test('a path or reference asked again is judged as the first time (the parse memo keeps no error and no order change)', async () => {
    // Each asked three times: the first parse fills the memo, the others are answered from it.
    for (let i = 0; i < 3; i++) {
      // A route with an invalid name: a wrong method is 405 before the name is judged, a right one 400.
      const wrong = await req(`${base}/v2/Bad_Name/manifests/latest`, { method: 'POST' });
      assert.equal(wrong.status, 405);
      assert.equal(errorCode(wrong.body), 'UNSUPPORTED');
      const right = await req(`${base}/v2/Bad_Name/manifests/latest`);
      assert.equal(right.status, 400);
      assert.equal(errorCode(right.body), 'NAME_INVALID');
      // Invalid references are never kept as valid ones.
      const badTag = await req(`${base}/v2/lib/app/manifests/-bad`);
      assert.equal(badTag.status, 400);
      assert.equal(errorCode(badTag.body), 'TAG_INVALID');
      const badDigest = await req(`${base}/v2/lib/app/manifests/sha256:abc`);
      assert.equal(badDigest.status, 400);
      assert.equal(errorCode(badDigest.body), 'DIGEST_INVALID');
      // A valid path of a repository that does not exist, and a valid but unknown tag of one that does.
      assert.equal(errorCode((await req(`${base}/v2/no/such/manifests/latest`)).body), 'NAME_UNKNOWN');
    }
  });
});
