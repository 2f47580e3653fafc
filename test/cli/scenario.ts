/**
 * The client-command scenario both registries go through (test/cli/berth.test.ts, distribution.test.ts): an
 * image index pushed with `blob put` + `manifest put` only, read back with `tags`, `catalog`, `inspect`,
 * `manifest get`, `blob get`, checked by skopeo, then `attach` + `referrers`, errors, and `delete`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addIndex, OciLayout, type BuiltIndex } from '../helpers/images.ts';
import { run } from '../helpers/run.ts';
import { berth, berthJson, berthOk } from './cli.ts';

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface ScenarioTarget {
  /** `127.0.0.1:<port>` */
  host: string;
  /** Whether the registry has the referrers API (Berth) or needs the tag schema (distribution 2.8). */
  referrersApi: boolean;
  /** Whether DELETE of a tag alone is supported (Berth) or refused (distribution 2.8). */
  tagDelete: boolean;
}

interface InspectJson {
  kind: string;
  digest: string;
  mediaType: string;
  platform?: string;
  created?: string;
  config: { digest: string; size: number };
  layers: Array<{ digest: string; size: number; mediaType: string }>;
  manifests: Array<{ digest: string; platform?: string; totalSize?: number }>;
  annotations: Record<string, string>;
  totalSize: number;
}

/** Registers the scenario's tests (to be called inside a describe whose `before` sets the target). */
export function clientScenario(target: () => ScenarioTarget): void {
  let tmp: string;
  let layout: OciLayout;
  let index: BuiltIndex;
  let repo: string;
  const file = (digest: string): string => layout.blobPath(digest);

  test('setup: build an OCI image index (2 platforms, 2 layers each)', () => {
    tmp = mkdtempSync(join(tmpdir(), 'berth-cli-'));
    layout = new OciLayout(join(tmp, 'layout'));
    index = addIndex(layout, { layers: 2, layerSize: 60_000, seed: 'cli' });
    repo = `${target().host}/team/cli-app`;
  });

  test('blob put + manifest put push the index; stdout is the digest', async () => {
    const blobs = index.images.flatMap((i) => [i.config.digest, ...i.layers.map((l) => l.desc.digest)]);
    const out = await berthOk(['blob', 'put', repo, ...blobs.map(file)]);
    assert.deepEqual(out.stdout.trim().split('\n'), blobs);
    // Not a terminal: one plain progress line per transfer on stderr.
    assert.equal(out.stderr.match(/: uploaded /g)?.length, blobs.length);
    const imgs = await Promise.all(index.images.map((i) => berthOk(['manifest', 'put', `${repo}@${i.digest}`, file(i.digest)])));
    assert.deepEqual(
      imgs.map((o) => o.stdout.trim()),
      index.images.map((i) => i.digest),
    );
    // From stdin, the media type from the document.
    const put = await berthOk(['manifest', 'put', `docker://${repo}:v1`, '-'], { input: index.manifest });
    assert.equal(put.stdout.trim(), index.digest);
  });

  test('tags, catalog, inspect (index and image, --json and human), manifest get byte-identical, blob get verified', async () => {
    const [tags, catalog, ix, img, human, raw, desc, again] = await Promise.all([
      berthJson<{ tags: string[] }>(['tags', repo]),
      berthJson<{ repositories: string[] }>(['catalog', target().host, '--page-size', '1']),
      berthJson<InspectJson>(['inspect', `${repo}:v1`]),
      berthJson<InspectJson>(['inspect', `${repo}@${index.images[1]!.digest}`]),
      berthOk(['inspect', `${repo}:v1`]),
      berthOk(['manifest', 'get', `${repo}:v1`]),
      berthJson<{ digest: string; size: number; mediaType: string }>(['manifest', 'get', '--descriptor', `${repo}:v1`]),
      // Present blobs are skipped.
      berthJson<{ blobs: Array<{ outcome: string }> }>(['blob', 'put', repo, file(index.images[0]!.config.digest)]),
    ]);
    assert.deepEqual(tags.tags, ['v1']);
    assert.ok(catalog.repositories.includes('team/cli-app'));
    assert.equal(ix.kind, 'index');
    assert.equal(ix.digest, index.digest);
    assert.deepEqual(
      ix.manifests.map((m) => [m.platform, m.digest]),
      [
        ['linux/amd64', index.images[0]!.digest],
        ['linux/arm64/v8', index.images[1]!.digest],
      ],
    );
    const imageTotal = (i: (typeof index.images)[number]): number => i.desc.size + i.config.size + i.layers.reduce((n, l) => n + l.desc.size, 0);
    assert.equal(ix.manifests[0]!.totalSize, imageTotal(index.images[0]!));
    assert.equal(ix.totalSize, index.manifest.length + imageTotal(index.images[0]!) + imageTotal(index.images[1]!));
    const i1 = index.images[1]!;
    assert.equal(img.kind, 'image');
    assert.equal(img.platform, 'linux/arm64/v8');
    assert.equal(img.created, '1970-01-01T00:00:00Z');
    assert.equal(img.config.digest, i1.config.digest);
    assert.deepEqual(
      img.layers.map((l) => [l.digest, l.size]),
      i1.layers.map((l) => [l.desc.digest, l.desc.size]),
    );
    assert.equal(img.totalSize, imageTotal(i1));
    assert.match(human.stdout, /^Digest: +sha256:[0-9a-f]{64}$/m);
    assert.match(human.stdout, /^ {2}linux\/arm64\/v8 +sha256:[0-9a-f]{64} {2}[\d.]+ KiB$/m);
    assert.ok(raw.bytes.equals(index.manifest), 'manifest get prints the exact bytes');
    assert.equal(again.blobs[0]!.outcome, 'exists');
    assert.deepEqual(desc, { mediaType: index.mediaType, digest: index.digest, size: index.manifest.length });

    const layer = i1.layers[0]!.desc;
    const out = join(tmp, 'layer.out');
    const got = await berthJson<{ digest: string; size: number }>(['blob', 'get', `${repo}@${layer.digest}`, '-o', out]);
    assert.deepEqual(got, { digest: layer.digest, size: layer.size, file: out });
    assert.equal(sha256(readFileSync(out)), layer.digest);
    const piped = await berthOk(['blob', 'get', `${repo}@${layer.digest}`]);
    assert.equal(sha256(piped.bytes), layer.digest);
  });

  test('skopeo reads what manifest put wrote', async () => {
    const r = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${repo}:v1`]);
    assert.ok(r.bytes.equals(index.manifest));
    const i = JSON.parse((await run('skopeo', ['inspect', '--tls-verify=false', `docker://${repo}@${index.images[0]!.digest}`])).stdout) as { Architecture: string; Layers: string[] };
    assert.equal(i.Architecture, 'amd64');
    assert.deepEqual(
      i.Layers,
      index.images[0]!.layers.map((l) => l.desc.digest),
    );
  });

  test('attach pushes an artifact with subject; referrers lists it (API or tag schema)', async () => {
    const subject = index.images[0]!;
    const sig = join(tmp, 'signature.json');
    writeFileSync(sig, JSON.stringify({ signed: subject.digest }));
    const a = await berthJson<{ digest: string; subject: string; referrersApi: boolean; layers: Array<{ digest: string; annotations: Record<string, string> }> }>([
      'attach',
      '--artifact-type',
      'application/vnd.example.sig',
      '-a',
      'org.example.k=v',
      `${repo}@${subject.digest}`,
      `${sig}:application/vnd.example.sig.v1+json`,
    ]);
    assert.equal(a.subject, subject.digest);
    assert.equal(a.referrersApi, target().referrersApi);
    assert.equal(a.layers[0]!.digest, sha256(readFileSync(sig)));
    assert.equal(a.layers[0]!.annotations['org.opencontainers.image.title'], 'signature.json');
    const art = JSON.parse((await berthOk(['manifest', 'get', `${repo}@${a.digest}`])).stdout) as { artifactType: string; config: { mediaType: string }; subject: { digest: string }; annotations: Record<string, string> };
    assert.equal(art.artifactType, 'application/vnd.example.sig');
    assert.equal(art.config.mediaType, 'application/vnd.oci.empty.v1+json');
    assert.equal(art.subject.digest, subject.digest);
    assert.equal(art.annotations['org.example.k'], 'v');

    const [refs, none] = await Promise.all([
      berthJson<{ source: string; manifests: Array<{ digest: string; artifactType: string; annotations: Record<string, string> }> }>(['referrers', `${repo}@${subject.digest}`]),
      berthOk(['referrers', '--artifact-type', 'application/vnd.other', `${repo}@${subject.digest}`]),
    ]);
    assert.equal(refs.source, target().referrersApi ? 'api' : 'tag-schema');
    assert.deepEqual(
      refs.manifests.map((m) => [m.digest, m.artifactType]),
      [[a.digest, 'application/vnd.example.sig']],
    );
    assert.equal(refs.manifests[0]!.annotations['org.example.k'], 'v');
    assert.equal(none.stdout, '');
  });

  test('errors: an unknown manifest exits 1 with the registry code and no stack trace', async () => {
    // `repo` alone means :latest, which does not exist.
    const [unknown, latest] = await Promise.all([berth(['manifest', 'get', `${repo}:nope`]), berth(['inspect', repo])]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^berth: GET http:\/\/127\.0\.0\.1:\d+\/v2\/team\/cli-app\/manifests\/nope: MANIFEST_UNKNOWN: manifest unknown/);
    assert.doesNotMatch(unknown.stderr, /\n\s+at /);
    assert.equal(unknown.stdout, '');
    assert.equal(latest.code, 1);
    assert.match(latest.stderr, /manifests\/latest: MANIFEST_UNKNOWN/);
  });

  test('delete: a tag where supported (else a hint), --manifest through a tag, a manifest by digest', async () => {
    const tagDel = await berth(['delete', `${repo}:v1`]);
    if (target().tagDelete) {
      assert.equal(tagDel.code, 0, tagDel.stderr);
      assert.deepEqual((await berthJson<{ tags: string[] }>(['tags', repo])).tags, []);
      // The manifest stayed: deleting it by digest succeeds.
      await berthOk(['delete', `${repo}@${index.digest}`]);
    } else {
      assert.equal(tagDel.code, 1);
      assert.match(tagDel.stderr, /--manifest deletes the manifest/);
      const del = await berthJson<{ deleted: { digest: string } }>(['delete', '--manifest', `${repo}:v1`]);
      assert.equal(del.deleted.digest, index.digest);
    }
    const gone = await berth(['inspect', `${repo}@${index.digest}`]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /MANIFEST_UNKNOWN/);
    rmSync(tmp, { recursive: true, force: true });
  });
}
