/**
 * Storage compatibility with distribution 2.8 (Debian's docker-registry), both ways, through real clients:
 * (a) skopeo pushes into Berth; Berth stops; docker-registry serves the same root directory and every image
 *     pulls with identical digests. The files Berth wrote sit at the exact paths of /work/shared/COMPAT.md.
 * (b) skopeo pushes into docker-registry; it stops; Berth serves the same root with identical digests, and
 *     the catalog (with its pagination) and tag lists agree with what docker-registry answered; after
 *     `berth referrers rebuild`, the artifact pushed through distribution shows up in the referrers API.
 * distribution 2.8 lists tags in directory order and ignores `n` on tag lists (v3 sorts and paginates), so tag
 * lists are compared as sets across the two, and Berth's own order and pagination are checked on their own.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT, startBerth, startDistribution, type RunningRegistry } from '../helpers/servers.ts';
import {
  ACCEPT_ALL,
  MT,
  blobDigests,
  buildArtifact,
  buildDockerImage,
  buildImage,
  buildMultiArch,
  dirTransportDigest,
  layoutDigest,
  sha256,
  type Built,
  type BuiltImage,
} from '../helpers/images.ts';
import { rawDigest, run, skopeoCopy } from '../helpers/run.ts';

interface Entry {
  repo: string;
  tags: string[];
  src: string;
  built: Built;
}

let tmp: string;
let entries: Entry[];
let subject: BuiltImage;
const running: RunningRegistry[] = [];

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'berth-e2e-compat-'));
  const s = (n: string): string => join(tmp, 'src', n);
  const oci = buildImage(s('oci'), 'v1', { layers: 3, layerSize: 3000, seed: 'compat-oci' });
  subject = oci.built;
  const docker = buildDockerImage(s('docker'), 'v1', { layers: 2, layerSize: 5000, seed: 'compat-docker' });
  const index = buildMultiArch(s('index'), 'v1', { seed: 'compat-index', layerSize: 1500 });
  const list = buildMultiArch(s('list'), 'v1', { format: 'docker', seed: 'compat-list', layerSize: 1500 });
  const artifact = buildArtifact(s('artifact'), 'sig', { subject: oci.built.desc, artifactType: 'application/vnd.example.signature.v1' });
  const nested = buildImage(s('nested'), 'v1', { layers: 1, layerSize: 1000, seed: 'compat-nested' });
  entries = [
    { repo: 'compat/oci', tags: ['v1', 'latest'], src: oci.src, built: oci.built },
    { repo: 'compat/oci', tags: ['sig'], src: artifact.src, built: artifact.built },
    { repo: 'compat/docker', tags: ['v1'], src: docker.src, built: docker.built },
    { repo: 'compat/index', tags: ['v1'], src: index.src, built: index.built },
    { repo: 'compat/list', tags: ['v1', 'v2'], src: list.src, built: list.built },
    { repo: 'compat/deep/nested/name', tags: ['v1'], src: nested.src, built: nested.built },
    { repo: 'top', tags: ['a', 'b', 'c'], src: nested.src, built: nested.built },
  ];
});

after(async () => {
  for (const r of running) await r.stop().catch(() => undefined);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

async function start<T extends RunningRegistry>(p: Promise<T>): Promise<T> {
  const r = await p;
  running.push(r);
  return r;
}

async function stop(r: RunningRegistry): Promise<void> {
  running.splice(running.indexOf(r), 1);
  await r.stop();
}

const hex = (d: string): string => d.slice('sha256:'.length);
const isDocker = (b: Built): boolean => b.mediaType === MT.dockerManifest || b.mediaType === MT.dockerList;
const multi = (b: Built): boolean => b.kind === 'index';

async function pushAll(reg: RunningRegistry): Promise<void> {
  for (const e of entries) {
    for (const tag of e.tags) await skopeoCopy(e.src, `docker://${reg.host}/${e.repo}:${tag}`, ...(multi(e.built) ? ['--all'] : []));
  }
}

/** Every image pulls from `reg` with the digests it was built with: raw manifests, headers, and full copies out. */
async function pullAll(reg: RunningRegistry, label: string): Promise<void> {
  let n = 0;
  for (const e of entries) {
    const manifests = [{ digest: e.built.digest, bytes: e.built.manifest }, ...(e.built.kind === 'index' ? e.built.images.map((i) => ({ digest: i.digest, bytes: i.manifest })) : [])];
    for (const tag of e.tags) {
      const ref = `docker://${reg.host}/${e.repo}:${tag}`;
      assert.equal(await rawDigest(ref), e.built.digest, `${label}: ${e.repo}:${tag}`);
      const r = await fetch(`${reg.url}/v2/${e.repo}/manifests/${tag}`, { headers: { Accept: ACCEPT_ALL } });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('docker-content-digest'), e.built.digest);
      assert.equal(r.headers.get('content-type'), e.built.mediaType);
      assert.deepEqual(Buffer.from(await r.arrayBuffer()), e.built.manifest);
    }
    for (const m of manifests.slice(1)) assert.equal(await rawDigest(`docker://${reg.host}/${e.repo}@${m.digest}`), m.digest);
    for (const b of blobDigests(e.built).layers) {
      const h = await fetch(`${reg.url}/v2/${e.repo}/blobs/${b}`, { method: 'HEAD' });
      assert.equal(h.status, 200, `${label}: blob ${b} in ${e.repo}`);
      assert.equal(h.headers.get('docker-content-digest'), b);
    }
    const out = join(tmp, `out-${label}-${n++}`);
    const flags = multi(e.built) ? ['--all'] : [];
    if (isDocker(e.built)) {
      // skopeo's oci: destination converts Docker media types; dir: keeps the bytes
      await skopeoCopy(`docker://${reg.host}/${e.repo}:${e.tags[0]}`, `dir:${out}`, ...flags);
      assert.equal(dirTransportDigest(out), e.built.digest);
    } else {
      await skopeoCopy(`docker://${reg.host}/${e.repo}:${e.tags[0]}`, `oci:${out}:${e.tags[0]}`, ...flags);
      assert.equal(layoutDigest(out, e.tags[0]), e.built.digest);
      for (const b of blobDigests(e.built).layers) assert.equal(sha256(readFileSync(join(out, 'blobs', 'sha256', hex(b)))), b);
    }
  }
}

function expectedCatalog(): string[] {
  return [...new Set(entries.map((e) => e.repo))].sort();
}

function expectedTags(repo: string): string[] {
  return entries
    .filter((e) => e.repo === repo)
    .flatMap((e) => e.tags)
    .sort();
}

/** Follows `Link: <…>; rel="next"` from `path` and returns every page's JSON body. */
async function pages(reg: RunningRegistry, path: string): Promise<unknown[]> {
  const out: unknown[] = [];
  let next: string | undefined = path;
  for (let i = 0; next && i < 50; i++) {
    const r = await fetch(new URL(next, reg.url));
    assert.equal(r.status, 200, `GET ${next}`);
    out.push(await r.json());
    next = /<([^>]+)>;\s*rel="next"/.exec(r.headers.get('link') ?? '')?.[1];
  }
  return out;
}

interface TagList {
  name: string;
  tags: string[];
}

interface Listings {
  /** `/v2/_catalog`, and its pages at `n=2` following `Link`. */
  catalog: unknown[];
  catalogBy2: unknown[];
  /** `/v2/<name>/tags/list` per repository. distribution 2.8 answers in directory order (v3 sorts), so compare sorted. */
  tags: Record<string, TagList>;
}

/** The catalog and tag-list answers worth comparing across registries. */
async function listings(reg: RunningRegistry): Promise<Listings> {
  const res: Listings = { catalog: await pages(reg, '/v2/_catalog'), catalogBy2: await pages(reg, '/v2/_catalog?n=2'), tags: {} };
  for (const repo of expectedCatalog()) {
    const [list, ...more] = (await pages(reg, `/v2/${repo}/tags/list`)) as TagList[];
    assert.deepEqual(more, [], `one page of tags for ${repo}`);
    res.tags[repo] = list!;
  }
  return res;
}

function sortedTags(l: Listings): Listings {
  return { ...l, tags: Object.fromEntries(Object.entries(l.tags).map(([k, v]) => [k, { name: v.name, tags: [...v.tags].sort() }])) };
}

/** What Berth must answer (v3 semantics: sorted tags; `n` paginates with `Link`). */
async function assertBerthListings(reg: RunningRegistry, l: Listings): Promise<void> {
  assert.deepEqual(l.catalog, [{ repositories: expectedCatalog() }]);
  for (const repo of expectedCatalog()) {
    assert.deepEqual(l.tags[repo], { name: repo, tags: expectedTags(repo) });
    const byOne = (await pages(reg, `/v2/${repo}/tags/list?n=1`)) as TagList[];
    assert.deepEqual(
      byOne.map((p) => p.tags),
      expectedTags(repo).map((t) => [t]),
    );
  }
}

function walk(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

/** The files of COMPAT.md's storage layout for every pushed manifest, blob and tag. */
function assertLayout(root: string): void {
  const v2 = join(root, 'docker/registry/v2');
  const link = (p: string): string => readFileSync(join(v2, p), 'utf8');
  for (const e of entries) {
    const repo = `repositories/${e.repo}`;
    const manifests = [{ digest: e.built.digest, bytes: e.built.manifest }, ...(e.built.kind === 'index' ? e.built.images.map((i) => ({ digest: i.digest, bytes: i.manifest })) : [])];
    for (const m of manifests) {
      assert.deepEqual(readFileSync(join(v2, 'blobs/sha256', hex(m.digest).slice(0, 2), hex(m.digest), 'data')), m.bytes, `manifest ${m.digest} stored as a blob`);
      assert.equal(link(`${repo}/_manifests/revisions/sha256/${hex(m.digest)}/link`), m.digest);
      assert.ok(!existsSync(join(v2, repo, '_layers/sha256', hex(m.digest))), `manifest ${m.digest} must not be linked in _layers`);
    }
    for (const b of blobDigests(e.built).layers) {
      assert.equal(sha256(readFileSync(join(v2, 'blobs/sha256', hex(b).slice(0, 2), hex(b), 'data'))), b);
      assert.equal(link(`${repo}/_layers/sha256/${hex(b)}/link`), b);
    }
    for (const tag of e.tags) {
      assert.equal(link(`${repo}/_manifests/tags/${tag}/current/link`), e.built.digest);
      assert.equal(link(`${repo}/_manifests/tags/${tag}/index/sha256/${hex(e.built.digest)}/link`), e.built.digest);
    }
    assert.deepEqual(readdirSync(join(v2, repo, '_manifests/tags')).sort(), expectedTags(e.repo));
    const uploads = join(v2, repo, '_uploads');
    assert.deepEqual(existsSync(uploads) ? readdirSync(uploads) : [], [], `no upload left behind in ${e.repo}`);
  }
  const files = walk(v2);
  assert.deepEqual(
    files.filter((f) => f.endsWith('.tmp')),
    [],
    'no temporary files',
  );
  for (const f of files.filter((p) => p.endsWith('/link'))) assert.match(readFileSync(f, 'utf8'), /^sha256:[0-9a-f]{64}$/, f);
}

describe('storage compatibility with distribution 2.8', () => {
  test('(a) pushed through Berth, served by docker-registry', async () => {
    const root = join(tmp, 'a-root');
    mkdirSync(root);
    const berth = await start(startBerth({ root }));
    await pushAll(berth);
    await pullAll(berth, 'a-berth');
    const berthListings = await listings(berth);
    await assertBerthListings(berth, berthListings);
    await stop(berth);

    assertLayout(root);

    const dist = await start(startDistribution({ root }));
    await pullAll(dist, 'a-dist');
    const distListings = await listings(dist);
    assert.deepEqual(distListings.catalog, [{ repositories: expectedCatalog() }]);
    assert.deepEqual(berthListings, sortedTags(distListings));
    await stop(dist);
  });

  test('(b) pushed through docker-registry, served by Berth', async () => {
    const root = join(tmp, 'b-root');
    mkdirSync(root);
    const dist = await start(startDistribution({ root }));
    await pushAll(dist);
    await pullAll(dist, 'b-dist');
    const distListings = await listings(dist);
    await stop(dist);

    assertLayout(root);

    // distribution keeps no referrers index: Berth's is rebuilt from the stored manifests
    const cfg = join(tmp, 'b-rebuild.yml');
    writeFileSync(cfg, `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${root}\n`);
    const rebuilt = await run(process.execPath, ['--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts'), 'referrers', 'rebuild', cfg], { cwd: PROJECT_ROOT });
    assert.match(rebuilt.stdout, /indexed 1 referrers/);

    const berth = await start(startBerth({ root }));
    await pullAll(berth, 'b-berth');
    const berthListings = await listings(berth);
    await assertBerthListings(berth, berthListings);
    assert.deepEqual(berthListings, sortedTags(distListings));

    const artifact = entries.find((e) => e.built.kind === 'artifact')!.built;
    const refs = await fetch(`${berth.url}/v2/compat/oci/referrers/${subject.digest}`);
    assert.equal(refs.status, 200);
    assert.deepEqual(((await refs.json()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest), [artifact.digest]);

    // and Berth can keep writing to a root distribution made: push a new tag and read it back
    const e = entries[0]!;
    await skopeoCopy(e.src, `docker://${berth.host}/${e.repo}:after`);
    assert.equal(await rawDigest(`docker://${berth.host}/${e.repo}:after`), subject.digest);
    await stop(berth);
  });
});
