/** Black-box tests of content discovery: end-8a/8b (tags), end-12a/12b (referrers), the catalog, and end-9/end-10 deletes. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { EMPTY_CONFIG, OCI_INDEX, OCI_MANIFEST, blob, errorCode, pushBlob, pushImage, putManifest, req, sha256 } from '../helpers/oci.ts';

let reg: RunningRegistry;
let base: string;
before(async () => {
  reg = await startBerth({ extraYaml: 'catalog:\n  maxentries: 50\n' });
  base = reg.url;
});
after(async () => {
  await reg.stop();
});

async function pushArtifact(name: string, subject: { digest: string; size: number }, artifactType: string, tag?: string): Promise<{ digest: string; status: number; headers: Headers }> {
  const empty = blob('{}');
  await pushBlob(base, name, empty);
  const payload = blob(`payload ${artifactType} ${Math.random()}`);
  await pushBlob(base, name, payload);
  const m = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: { mediaType: EMPTY_CONFIG, digest: empty.digest, size: 2 },
    layers: [{ mediaType: 'application/octet-stream', digest: payload.digest, size: payload.size }],
    subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.size },
    annotations: { 'org.example.kind': artifactType },
  };
  const r = await putManifest(base, name, tag ?? sha256(JSON.stringify(m)), m);
  return { digest: r.digest, status: r.status, headers: r.headers };
}

describe('discovery', () => {
  test('end-8a: tags list in lexical order', async () => {
    for (const t of ['v2', 'v10', 'latest', 'A', 'v1']) await pushImage(base, 'tags/repo', t, 'same');
    const r = await req(`${base}/v2/tags/repo/tags/list`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { name: 'tags/repo', tags: ['A', 'latest', 'v1', 'v10', 'v2'] });
  });

  test('end-8b: tags pagination with n, last and Link; n=0 is empty', async () => {
    const page1 = await req(`${base}/v2/tags/repo/tags/list?n=2`);
    assert.deepEqual((page1.json() as { tags: string[] }).tags, ['A', 'latest']);
    const link = page1.headers.get('link');
    assert.match(link ?? '', /<\/v2\/tags\/repo\/tags\/list\?n=2&last=latest>; rel="next"/);
    const page2 = await req(`${base}/v2/tags/repo/tags/list?n=2&last=latest`);
    assert.deepEqual((page2.json() as { tags: string[] }).tags, ['v1', 'v10']);
    const page3 = await req(`${base}/v2/tags/repo/tags/list?n=2&last=v10`);
    assert.deepEqual((page3.json() as { tags: string[] }).tags, ['v2']);
    assert.equal(page3.headers.get('link'), null);
    const zero = await req(`${base}/v2/tags/repo/tags/list?n=0`);
    assert.deepEqual((zero.json() as { tags: string[] }).tags, []);
    const after = await req(`${base}/v2/tags/repo/tags/list?last=v1`);
    assert.deepEqual((after.json() as { tags: string[] }).tags, ['v10', 'v2']);
    const bad = await req(`${base}/v2/tags/repo/tags/list?n=-1`);
    assert.equal(bad.status, 400);
    assert.equal(errorCode(bad.body), 'PAGINATION_NUMBER_INVALID');
  });

  test('end-8a: tags of an unknown repository is NAME_UNKNOWN', async () => {
    const r = await req(`${base}/v2/no/such/repo/tags/list`);
    assert.equal(r.status, 404);
    assert.equal(errorCode(r.body), 'NAME_UNKNOWN');
  });

  test('catalog: nested names in catalog order with pagination and maxentries', async () => {
    for (const n of ['cat/a', 'cat/a/b', 'cat/a-b', 'cat/b', 'cat/a/b/c']) await pushImage(base, n, 'v1');
    const all = (await req(`${base}/v2/_catalog`)).json() as { repositories: string[] };
    const cat = all.repositories.filter((r) => r.startsWith('cat/'));
    assert.deepEqual(cat, ['cat/a', 'cat/a/b', 'cat/a/b/c', 'cat/a-b', 'cat/b']);
    // Full pagination with n=2 visits every repository exactly once, in order.
    const seen: string[] = [];
    let url: string | undefined = `${base}/v2/_catalog?n=2`;
    while (url) {
      const r = await req(url);
      assert.equal(r.status, 200);
      seen.push(...(r.json() as { repositories: string[] }).repositories);
      const link = r.headers.get('link');
      url = link ? `${base}${/<([^>]+)>/.exec(link)![1]}` : undefined;
    }
    assert.deepEqual(seen, all.repositories);
    const afterA = (await req(`${base}/v2/_catalog?last=cat/a/b&n=10`)).json() as { repositories: string[] };
    assert.deepEqual(afterA.repositories.filter((r) => r.startsWith('cat/')), ['cat/a/b/c', 'cat/a-b', 'cat/b']);
    const tooMany = await req(`${base}/v2/_catalog?n=51`);
    assert.equal(tooMany.status, 400);
    assert.equal(errorCode(tooMany.body), 'PAGINATION_NUMBER_INVALID');
    assert.deepEqual((await req(`${base}/v2/_catalog?n=0`)).json(), { repositories: [] });
  });

  test('catalog: repositories with only uploads or only blobs are not listed', async () => {
    await req(`${base}/v2/cat/uploadonly/blobs/uploads/`, { method: 'POST' });
    await pushBlob(base, 'cat/blobonly', blob('x'));
    const all = (await req(`${base}/v2/_catalog`)).json() as { repositories: string[] };
    assert.ok(!all.repositories.includes('cat/uploadonly'));
    assert.ok(!all.repositories.includes('cat/blobonly'));
  });

  test('end-12a: referrers lists manifests whose subject is the digest, with OCI-Subject on PUT', async () => {
    const img = await pushImage(base, 'ref/repo', 'v1');
    const subject = { digest: img.digest, size: img.body.length };
    const sig = await pushArtifact('ref/repo', subject, 'application/vnd.example.sig');
    assert.equal(sig.status, 201);
    assert.equal(sig.headers.get('oci-subject'), img.digest);
    const sbom = await pushArtifact('ref/repo', subject, 'application/vnd.example.sbom', 'sbom-tag');
    const r = await req(`${base}/v2/ref/repo/referrers/${img.digest}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), OCI_INDEX);
    const idx = r.json() as { schemaVersion: number; mediaType: string; manifests: Array<{ digest: string; artifactType: string; mediaType: string; size: number; annotations: Record<string, string> }> };
    assert.equal(idx.schemaVersion, 2);
    assert.equal(idx.mediaType, OCI_INDEX);
    assert.deepEqual(idx.manifests.map((m) => m.digest).sort(), [sig.digest, sbom.digest].sort());
    const s = idx.manifests.find((m) => m.digest === sig.digest)!;
    assert.equal(s.artifactType, 'application/vnd.example.sig');
    assert.equal(s.mediaType, OCI_MANIFEST);
    assert.equal(s.annotations['org.example.kind'], 'application/vnd.example.sig');
    assert.ok(existsSync(join(reg.root, `docker/registry/v2/repositories/ref/repo/_referrers/sha256/${img.digest.slice(7)}`)));
  });

  test('end-12b: referrers filtered by artifactType set OCI-Filters-Applied', async () => {
    const img = (await req(`${base}/v2/ref/repo/manifests/v1`)).headers.get('docker-content-digest')!;
    const r = await req(`${base}/v2/ref/repo/referrers/${img}?artifactType=application/vnd.example.sbom`);
    assert.equal(r.headers.get('oci-filters-applied'), 'artifactType');
    const idx = r.json() as { manifests: Array<{ artifactType: string }> };
    assert.equal(idx.manifests.length, 1);
    assert.equal(idx.manifests[0]!.artifactType, 'application/vnd.example.sbom');
  });

  test('end-12a: unknown subject gives an empty index, never 404; a missing subject is allowed on PUT', async () => {
    const r = await req(`${base}/v2/ref/repo/referrers/${sha256('nothing')}`);
    assert.equal(r.status, 200);
    assert.deepEqual((r.json() as { manifests: unknown[] }).manifests, []);
    const ghost = await pushArtifact('ref/ghost', { digest: sha256('not pushed yet'), size: 10 }, 'application/vnd.example.sig');
    assert.equal(ghost.status, 201);
    const g = (await req(`${base}/v2/ref/ghost/referrers/${sha256('not pushed yet')}`)).json() as { manifests: unknown[] };
    assert.equal(g.manifests.length, 1);
    const bad = await req(`${base}/v2/ref/repo/referrers/sha256:nothex`);
    assert.equal(bad.status, 400);
  });

  test('end-9: DELETE a tag removes only the tag', async () => {
    const img = await pushImage(base, 'del/tag', 'one', 'shared');
    await pushImage(base, 'del/tag', 'two', 'shared');
    assert.equal((await req(`${base}/v2/del/tag/manifests/one`, { method: 'DELETE' })).status, 202);
    assert.equal((await req(`${base}/v2/del/tag/manifests/one`)).status, 404);
    assert.equal((await req(`${base}/v2/del/tag/manifests/two`)).status, 200);
    assert.equal((await req(`${base}/v2/del/tag/manifests/${img.digest}`)).status, 200);
    assert.equal((await req(`${base}/v2/del/tag/manifests/one`, { method: 'DELETE' })).status, 404);
  });

  test('end-9: DELETE a manifest by digest removes it and every tag pointing at it', async () => {
    const img = await pushImage(base, 'del/digest', 'a', 'same');
    await pushImage(base, 'del/digest', 'b', 'same');
    const other = await pushImage(base, 'del/digest', 'c', 'different');
    const r = await req(`${base}/v2/del/digest/manifests/${img.digest}`, { method: 'DELETE' });
    assert.equal(r.status, 202);
    assert.equal((await req(`${base}/v2/del/digest/manifests/${img.digest}`)).status, 404);
    assert.deepEqual(((await req(`${base}/v2/del/digest/tags/list`)).json() as { tags: string[] }).tags, ['c']);
    assert.equal((await req(`${base}/v2/del/digest/manifests/${other.digest}`)).status, 200);
    const again = await req(`${base}/v2/del/digest/manifests/${img.digest}`, { method: 'DELETE' });
    assert.equal(again.status, 404);
    assert.equal(errorCode(again.body), 'MANIFEST_UNKNOWN');
  });

  test('end-9: deleting a referrer removes it from the referrers list', async () => {
    const img = await pushImage(base, 'del/ref', 'v1');
    const sig = await pushArtifact('del/ref', { digest: img.digest, size: img.body.length }, 'application/vnd.example.sig');
    assert.equal((await req(`${base}/v2/del/ref/manifests/${sig.digest}`, { method: 'DELETE' })).status, 202);
    const idx = (await req(`${base}/v2/del/ref/referrers/${img.digest}`)).json() as { manifests: unknown[] };
    assert.equal(idx.manifests.length, 0);
  });

  test('end-10: DELETE a blob unlinks it from the repository', async () => {
    const b = blob('delete this blob');
    await pushBlob(base, 'del/blob', b);
    assert.equal((await req(`${base}/v2/del/blob/blobs/${b.digest}`, { method: 'DELETE' })).status, 202);
    assert.equal((await req(`${base}/v2/del/blob/blobs/${b.digest}`, { method: 'HEAD' })).status, 404);
    const again = await req(`${base}/v2/del/blob/blobs/${b.digest}`, { method: 'DELETE' });
    assert.equal(again.status, 404);
    assert.equal(errorCode(again.body), 'BLOB_UNKNOWN');
  });

  test('delete then re-push of the same manifest serves it again', async () => {
    const img = await pushImage(base, 'del/repush', 'v1');
    await req(`${base}/v2/del/repush/manifests/${img.digest}`, { method: 'DELETE' });
    const again = await putManifest(base, 'del/repush', 'v1', JSON.parse(img.body.toString()));
    assert.equal(again.status, 201);
    assert.equal((await req(`${base}/v2/del/repush/manifests/v1`)).headers.get('docker-content-digest'), img.digest);
  });

  test('end-7: an index referencing pushed manifests, by tag', async () => {
    const a = await pushImage(base, 'idx/repo', 'amd64');
    const b = await pushImage(base, 'idx/repo', 'arm64');
    const idx = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: a.digest, size: a.body.length, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: OCI_MANIFEST, digest: b.digest, size: b.body.length, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    };
    const r = await putManifest(base, 'idx/repo', 'multi', idx, OCI_INDEX);
    assert.equal(r.status, 201);
    assert.equal((await req(`${base}/v2/idx/repo/manifests/multi`)).headers.get('content-type'), OCI_INDEX);
  });
});

describe('tags list cache', () => {
  test('end-8a: the listing follows tags added and deleted in quick succession', async () => {
    const img = await pushImage(base, 'tagcache/repo', 't000');
    const body = JSON.parse(img.body.toString()) as Record<string, unknown>;
    const expected = ['t000'];
    for (let i = 1; i <= 30; i++) {
      const tag = `t${String(i).padStart(3, '0')}`;
      assert.equal((await putManifest(base, 'tagcache/repo', tag, body)).status, 201);
      expected.push(tag);
      if (i % 3 === 0) {
        const gone = expected.splice(expected.length - 2, 1)[0]!;
        assert.equal((await req(`${base}/v2/tagcache/repo/manifests/${gone}`, { method: 'DELETE' })).status, 202);
      }
      const listed = ((await req(`${base}/v2/tagcache/repo/tags/list`)).json() as { tags: string[] }).tags;
      assert.deepEqual(listed, expected, `after ${tag}`);
    }
    // A second repository with the same tags gets its own name; HEAD announces the length GET sends.
    await pushImage(base, 'tagcache/twin', 't000');
    const twin = await req(`${base}/v2/tagcache/twin/tags/list`);
    assert.deepEqual(twin.json(), { name: 'tagcache/twin', tags: ['t000'] });
    const head = await req(`${base}/v2/tagcache/twin/tags/list`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(twin.body.length));
    assert.equal(head.body.length, 0);
  });
});

describe('catalog listing cache', () => {
  test('catalog: a large namespace stays fresh as repositories are added and removed', async () => {
    const config = blob('{"shared":"config"}');
    await pushBlob(base, 'many/r000', config);
    const m = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size }, layers: [] };
    const names: string[] = [];
    for (let i = 0; i < 70; i++) {
      const name = `many/r${String(i).padStart(3, '0')}`;
      if (i > 0) await req(`${base}/v2/${name}/blobs/uploads/?mount=${config.digest}&from=many/r000`, { method: 'POST' });
      assert.equal((await putManifest(base, name, 'v1', m)).status, 201);
      names.push(name);
    }
    const list = async (): Promise<string[]> => {
      const out: string[] = [];
      let url: string | undefined = `${base}/v2/_catalog?n=50`;
      while (url) {
        const r = await req(url);
        out.push(...(r.json() as { repositories: string[] }).repositories);
        const link = r.headers.get('link');
        url = link ? `${base}${/<([^>]+)>/.exec(link)![1]}` : undefined;
      }
      return out.filter((n) => n.startsWith('many/'));
    };
    assert.deepEqual(await list(), names);
    assert.deepEqual(await list(), names, 'second pass (cached listing)');
    await req(`${base}/v2/many/r070/blobs/uploads/?mount=${config.digest}&from=many/r000`, { method: 'POST' });
    assert.equal((await putManifest(base, 'many/r070', 'v1', m)).status, 201);
    assert.deepEqual(await list(), [...names, 'many/r070']);
  });
});
