import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDigest, parseDigest } from './digest.ts';
import { isRepoName, isTag } from './names.ts';
import { parseManifest } from './manifest.ts';
import { matchRoute } from './routes.ts';
import { OciError } from './errors.ts';

const H = 'a'.repeat(64);

test('digest grammar: sha256/sha512 with exact hex length, lowercase only', () => {
  assert.ok(isDigest(`sha256:${H}`));
  assert.ok(isDigest(`sha512:${'b'.repeat(128)}`));
  assert.ok(!isDigest(`sha256:${H.toUpperCase()}`));
  assert.ok(!isDigest(`sha256:${H}0`));
  assert.ok(!isDigest(`md5:${H}`));
  assert.ok(!isDigest('sha256:'));
  assert.ok(!isDigest(`sha256:../${H}`));
  assert.throws(() => parseDigest('nope'), (e: unknown) => e instanceof OciError && e.code === 'DIGEST_INVALID');
});

test('repository names and tags follow the spec grammar', () => {
  for (const n of ['a', 'library/ubuntu', 'a.b_c__d-e--f/g', 'x/y/z']) assert.ok(isRepoName(n), n);
  for (const n of ['', 'A', 'a/', '/a', 'a//b', 'a/../b', '..', 'a_', '-a', 'a%2fb', 'a\\b', 'a'.repeat(256)]) assert.ok(!isRepoName(n), n);
  for (const t of ['latest', 'v1.0', '_x', 'A-b.c_d', 'a'.repeat(128)]) assert.ok(isTag(t), t);
  for (const t of ['', '.x', '-x', 'a'.repeat(129), 'a/b', 'a:b']) assert.ok(!isTag(t), t);
});

test('routes: names with slashes, every endpoint id', () => {
  assert.deepEqual(matchRoute('/v2/a/b/manifests/latest'), { id: 'manifest', name: 'a/b', ref: 'latest', methods: ['GET', 'HEAD', 'PUT', 'DELETE'] });
  assert.equal(matchRoute('/v2/a/blobs/uploads/')?.id, 'upload-start');
  assert.equal(matchRoute('/v2/a/blobs/uploads/abc')?.id, 'upload');
  assert.equal(matchRoute(`/v2/a/blobs/sha256:${H}`)?.id, 'blob');
  assert.equal(matchRoute('/v2/a/tags/list')?.id, 'tags');
  assert.equal(matchRoute(`/v2/a/referrers/sha256:${H}`)?.id, 'referrers');
  assert.equal(matchRoute('/v2/_catalog')?.id, 'catalog');
  assert.equal(matchRoute('/v2/')?.id, 'base');
  assert.equal(matchRoute('/v3/'), undefined);
});

test('manifest parsing: references, subject, media type checks', () => {
  const cfg = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${H}`, size: 2 };
  const m = parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, config: cfg, layers: [], subject: cfg })), 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(m.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(m.blobs.length, 1);
  assert.equal(m.subject?.digest, `sha256:${H}`);
  const foreign = parseManifest(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config: cfg, layers: [{ mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: `sha256:${'c'.repeat(64)}`, size: 1, urls: ['https://example.com/x'] }] })),
    'application/vnd.docker.distribution.manifest.v2+json',
  );
  assert.equal(foreign.blobs.length, 1, 'foreign layers with urls need not exist');
  const inv = (body: unknown, ct?: string): void => assert.throws(() => parseManifest(Buffer.from(JSON.stringify(body)), ct), (e: unknown) => e instanceof OciError && e.code === 'MANIFEST_INVALID');
  inv({ schemaVersion: 2, config: { ...cfg, size: -1 }, layers: [] });
  inv({ schemaVersion: 2, config: cfg, layers: 'x' }, 'application/vnd.oci.image.manifest.v1+json');
  inv({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }, 'application/vnd.docker.distribution.manifest.v2+json');
  inv({ schemaVersion: 1, name: 'x' });
});
