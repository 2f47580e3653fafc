/**
 * Manifests, tags and referrers over distribution's layout. Manifest bytes are blobs; a revision link makes
 * them part of a repository; tags point at revisions; Berth's `_referrers` index maps subjects to referrers.
 */
import { OciError } from '../spec/errors.ts';
import { type Digest, type ParsedDigest, digestOf, tryParseDigest } from '../spec/digest.ts';
import { MediaType, IMAGE_MANIFEST_TYPES } from '../spec/media-types.ts';
import { type Descriptor, MAX_MANIFEST_SIZE, parseManifest } from '../spec/manifest.ts';
import type { RepoName, Tag } from '../spec/names.ts';
import { type ContentWrite, isNotFound, putInOrder, type StorageDriver } from '../storage/driver.ts';
import type { BlobStore } from './blobs.ts';
import { byteCompare, exists, type ListingCache, listOrEmpty, readLink, remove, sortedListing } from './context.ts';
import * as P from './paths.ts';
import { ByteLru } from './byte-lru.ts';
import type { CacheGuard } from './descriptor-cache.ts';

export type ManifestRef = { tag: Tag; digest?: undefined } | { digest: ParsedDigest; tag?: undefined };

export interface StoredManifest {
  digest: Digest;
  mediaType: string;
  body: Buffer;
  /** What the referrers API reports for this manifest. */
  artifactType?: string;
  annotations?: Record<string, string>;
  subject?: Digest;
}

export interface PutResult {
  digest: Digest;
  subject?: Digest;
}

/** Reads what GET needs from stored manifest bytes without revalidating them. */
function describe(digest: Digest, body: Buffer): StoredManifest {
  let doc: Record<string, unknown> = {};
  try {
    const v: unknown = JSON.parse(body.toString('utf8'));
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) doc = v as Record<string, unknown>;
  } catch {
    // Stored bytes that are not JSON (written by another tool) are still served as they are.
  }
  let mediaType = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  if (!mediaType) {
    if (doc.schemaVersion === 1) mediaType = doc.signatures ? MediaType.DockerSchema1Signed : MediaType.DockerSchema1;
    else mediaType = Array.isArray(doc.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
  }
  const m: StoredManifest = { digest, mediaType, body };
  const config = doc.config as { mediaType?: unknown } | undefined;
  if (typeof doc.artifactType === 'string') m.artifactType = doc.artifactType;
  else if (IMAGE_MANIFEST_TYPES.has(mediaType) && typeof config?.mediaType === 'string') m.artifactType = config.mediaType;
  if (typeof doc.annotations === 'object' && doc.annotations !== null) m.annotations = doc.annotations as Record<string, string>;
  const subject = doc.subject as { digest?: unknown } | undefined;
  if (typeof subject?.digest === 'string' && tryParseDigest(subject.digest)) m.subject = subject.digest as Digest;
  return m;
}

/** Reference checks of one manifest PUT in flight at once. */
const REFERENCE_CHECKS = 32;

/** The files that point `tag` at a revision: the index link first, then `current`, as distribution writes them. */
function tagWrites(name: RepoName, tag: Tag, digest: Digest): ContentWrite[] {
  const link = Buffer.from(digest);
  return [
    { path: P.tagIndexLink(name, tag, digest), data: link },
    { path: P.tagCurrentLink(name, tag), data: link },
  ];
}

/**
 * What a lookup of one reference in one repository reads, kept per repository and reference: the same path
 * strings each time, so every map a lookup passes through (path checks, the driver's caches) finds a string whose
 * hash V8 has already computed, instead of building and hashing new ones per request.
 */
interface Lookup {
  /** The tag's current link, or the digest's revision link. */
  link: string;
  /**
   * Tags: the digest the tag named last, and its revision link. A guess that lets a lookup read the tag link and
   * the revision link it most likely names at once (one round of the driver's coalesced metadata lookups, not
   * two). Never trusted: the tag link read in the same lookup decides.
   */
  guess?: Digest;
  guessLink?: string;
}

/** Lookups kept (each a reference of a repository); past this they start over. */
const LOOKUPS = 10_000;

export class ManifestStore {
  /** Manifest content by digest (immutable, so never stale); one manifest may use at most a quarter. */
  private readonly cache: ByteLru<StoredManifest>;
  private readonly tagLists: ListingCache = new Map();
  /** By repository, then tag or digest (a tag has no `:`, a digest always one). */
  private readonly lookups = new Map<RepoName, Map<string, Lookup>>();
  private lookupCount = 0;

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    cacheBytes: number,
    /** The blob-descriptor cache, if configured. */
    private readonly descriptors?: CacheGuard,
  ) {
    this.cache = new ByteLru<StoredManifest>(cacheBytes, (m) => m.body.length, cacheBytes / 4);
  }

  /**
   * Resolves a tag or digest to a digest that is a revision of `name`, else `MANIFEST_UNKNOWN`. A tag's target
   * is checked too (as distribution does): a delete by digest removes the revision before the tags pointing at
   * it, so a crash or a racing tag write between the two must not leave a tag that serves a deleted manifest.
   */
  async resolve(name: RepoName, ref: ManifestRef): Promise<Digest> {
    const l = this.lookup(name, ref);
    if (ref.tag !== undefined) {
      const guess = l.guess;
      const [digest, guessed] = await Promise.all([readLink(this.driver, l.link), guess === undefined ? undefined : readLink(this.driver, l.guessLink!)]);
      const revision = digest === undefined ? undefined : digest === guess ? guessed : await readLink(this.driver, P.revisionLink(name, digest));
      if (!digest || revision !== digest) {
        l.guess = l.guessLink = undefined;
        throw await this.unknown(name, { tag: ref.tag });
      }
      if (digest !== guess) {
        l.guess = digest;
        l.guessLink = P.revisionLink(name, digest);
      }
      return digest;
    }
    const digest = ref.digest.digest;
    if ((await readLink(this.driver, l.link)) !== digest) throw await this.unknown(name, digest);
    return digest;
  }

  private lookup(name: RepoName, ref: ManifestRef): Lookup {
    const key = ref.tag ?? ref.digest.digest;
    let byRef = this.lookups.get(name);
    let l = byRef?.get(key);
    if (l) return l;
    if (this.lookupCount >= LOOKUPS) {
      this.lookups.clear();
      this.lookupCount = 0;
      byRef = undefined;
    }
    if (!byRef) this.lookups.set(name, (byRef = new Map()));
    l = { link: ref.tag !== undefined ? P.tagCurrentLink(name, ref.tag) : P.revisionLink(name, ref.digest.digest) };
    byRef.set(key, l);
    this.lookupCount++;
    return l;
  }

  private async unknown(name: RepoName, detail: unknown): Promise<OciError> {
    if (!(await exists(this.driver, P.repoDir(name)))) return new OciError('NAME_UNKNOWN', { name });
    return new OciError('MANIFEST_UNKNOWN', detail);
  }

  /** Reads a manifest's bytes by digest (from the content cache when possible). */
  async content(digest: Digest): Promise<StoredManifest> {
    const hit = this.cache.get(digest);
    if (hit) return hit;
    let body: Buffer;
    try {
      body = await this.driver.getContent(P.blobData(digest), { maxSize: MAX_MANIFEST_SIZE });
    } catch (e) {
      if (isNotFound(e)) throw new OciError('MANIFEST_UNKNOWN', { digest });
      throw e;
    }
    const m = describe(digest, body);
    this.cache.set(digest, m);
    return m;
  }

  async get(name: RepoName, ref: ManifestRef): Promise<StoredManifest> {
    return this.content(await this.resolve(name, ref));
  }

  /** Validates and stores a manifest; tags it when `ref` is a tag. */
  async put(name: RepoName, ref: ManifestRef, body: Buffer, contentType: string | undefined): Promise<PutResult> {
    if (body.length > MAX_MANIFEST_SIZE) throw new OciError('MANIFEST_TOO_LARGE', { size: body.length, limit: MAX_MANIFEST_SIZE });
    const parsed = parseManifest(body, contentType);
    const digest = digestOf(body, ref.digest?.algorithm ?? 'sha256');
    if (ref.digest && ref.digest.digest !== digest) {
      throw new OciError('DIGEST_INVALID', { expected: ref.digest.digest, actual: digest });
    }
    await this.checkReferences(name, parsed.blobs, parsed.manifests);
    // In this order, each durable before the next is visible: the bytes, the revision, its referrer entry, the tag.
    const writes: ContentWrite[] = [];
    if (!(await exists(this.driver, P.blobData(digest)))) writes.push({ path: P.blobData(digest), data: body });
    const link = Buffer.from(digest);
    writes.push({ path: P.revisionLink(name, digest), data: link });
    const subject = parsed.subject?.digest;
    if (subject) writes.push({ path: P.referrerLink(name, subject, digest), data: link });
    if (ref.tag !== undefined) writes.push(...tagWrites(name, ref.tag, digest));
    await putInOrder(this.driver, writes);
    // Only the global descriptor: the cache's repository memberships stand for layer links.
    await this.descriptors?.setDescriptor(digest, { digest, size: body.length, mediaType: parsed.mediaType });
    if (ref.tag !== undefined) await this.settleTag(name, ref.tag, digest);
    return subject ? { digest, subject } : { digest };
  }

  /**
   * After a put by tag, leaves the tag in a state some order of the racing requests explains: a delete that
   * ran while this put wrote its links can leave the tag's directory half removed (its `current` link gone, a
   * newer index link kept), listed by the tags API but unknown to GET.
   * - The revision is gone: a delete by digest ran after this put's revision link and missed this tag (or took
   *   only part of it), so finish its work and remove the tag.
   * - The revision is there but `current` is not: whatever removed it ran before this put finished, so
   *   write the tag again. A `current` naming another digest is a later push's, and stays.
   * A few rounds, as another delete can come between the check and the write.
   */
  private async settleTag(name: RepoName, tag: Tag, digest: Digest): Promise<void> {
    for (let round = 0; round < 3; round++) {
      const current = await readLink(this.driver, P.tagCurrentLink(name, tag));
      if ((await readLink(this.driver, P.revisionLink(name, digest))) !== digest) {
        if (current === digest || current === undefined) await remove(this.driver, P.tagDir(name, tag));
        return;
      }
      if (current !== undefined) return;
      await putInOrder(this.driver, tagWrites(name, tag, digest));
    }
  }

  /**
   * Checks that every referenced blob and child manifest exists in `name`. A 4 MiB index can list one digest
   * 30,000 times or 30,000 different ones: each distinct reference is checked once, and at most
   * {@link REFERENCE_CHECKS} at a time, so one request cannot queue tens of thousands of file reads at once.
   */
  private async checkReferences(name: RepoName, blobs: Descriptor[], manifests: Descriptor[]): Promise<void> {
    const checks = new Map<string, [Digest, () => Promise<boolean>]>();
    for (const b of blobs) checks.set(`blob ${b.digest}`, [b.digest, () => this.blobs.isLinked(name, b.digest)]);
    for (const m of manifests) {
      checks.set(`manifest ${m.digest}`, [m.digest, async () => (await readLink(this.driver, P.revisionLink(name, m.digest))) === m.digest]);
    }
    const todo = [...checks.values()];
    const missing: string[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < todo.length) {
        const [digest, present] = todo[next++]!;
        if (!(await present())) missing.push(digest);
      }
    };
    await Promise.all(Array.from({ length: Math.min(REFERENCE_CHECKS, todo.length) }, worker));
    if (missing.length > 0) throw new OciError('MANIFEST_BLOB_UNKNOWN', { digest: missing.sort()[0], missing: missing.slice(0, 20) });
  }

  /** Deletes a tag (by tag) or a manifest revision and every tag pointing at it (by digest). */
  async delete(name: RepoName, ref: ManifestRef): Promise<void> {
    if (ref.tag !== undefined) {
      if (!(await readLink(this.driver, P.tagCurrentLink(name, ref.tag)))) throw await this.unknown(name, { tag: ref.tag });
      await remove(this.driver, P.tagDir(name, ref.tag));
      return;
    }
    const digest = await this.resolve(name, ref);
    let subject: Digest | undefined;
    try {
      subject = (await this.content(digest)).subject;
    } catch {
      subject = undefined;
    }
    // A membership another writer (distribution records manifests too) may have left answers blob requests for
    // this digest: clear it before unlinking (UNAVAILABLE and nothing changed if that fails) and after.
    await this.descriptors?.invalidate(name, digest);
    await remove(this.driver, P.revisionDir(name, digest));
    await this.descriptors?.forget(name, digest);
    for (const t of await listOrEmpty(this.driver, P.tagsDir(name))) {
      const tag = t as Tag;
      if ((await readLink(this.driver, P.tagCurrentLink(name, tag))) === digest) await remove(this.driver, P.tagDir(name, tag));
    }
    if (subject) await remove(this.driver, P.referrerLink(name, subject, digest).slice(0, -'/link'.length));
  }

  /**
   * All tags of a repository in byte order; `NAME_UNKNOWN` when the repository does not exist.
   * The sorted listing is reused while the tags directory's version token is unchanged, so paging through
   * thousands of tags does not re-read and re-sort them each time.
   */
  async tags(name: RepoName): Promise<readonly string[]> {
    const tags = await sortedListing(this.driver, P.tagsDir(name), this.tagLists);
    if (tags.length === 0 && !(await exists(this.driver, P.manifestsDir(name)))) throw new OciError('NAME_UNKNOWN', { name });
    return tags;
  }

  /** Descriptors of the manifests whose `subject` is `subject`, optionally filtered by artifact type. */
  async referrers(name: RepoName, subject: Digest, artifactType?: string): Promise<Descriptor[]> {
    const dir = P.referrersDir(name, subject);
    const out: Descriptor[] = [];
    for (const alg of await listOrEmpty(this.driver, dir)) {
      for (const hex of await listOrEmpty(this.driver, `${dir}/${alg}`)) {
        const digest = await readLink(this.driver, `${dir}/${alg}/${hex}/link`);
        if (!digest) continue;
        if ((await readLink(this.driver, P.revisionLink(name, digest))) !== digest) continue;
        let m: StoredManifest;
        try {
          m = await this.content(digest);
        } catch {
          continue;
        }
        if (artifactType !== undefined && m.artifactType !== artifactType) continue;
        const d: Descriptor = { mediaType: m.mediaType, digest, size: m.body.length };
        if (m.artifactType !== undefined) d.artifactType = m.artifactType;
        if (m.annotations !== undefined) d.annotations = m.annotations;
        out.push(d);
      }
    }
    return out.sort((a, b) => byteCompare(a.digest, b.digest));
  }

  /** Rebuilds the referrer index of `name` from its manifest revisions (for storage written by distribution). */
  async rebuildReferrers(name: RepoName): Promise<number> {
    let count = 0;
    const root = P.revisionsRoot(name);
    for (const alg of await listOrEmpty(this.driver, root)) {
      for (const hex of await listOrEmpty(this.driver, `${root}/${alg}`)) {
        const digest = await readLink(this.driver, `${root}/${alg}/${hex}/link`);
        if (!digest) continue;
        let m: StoredManifest;
        try {
          m = await this.content(digest);
        } catch {
          continue;
        }
        if (m.subject) {
          await this.driver.putContent(P.referrerLink(name, m.subject, digest), Buffer.from(digest));
          count++;
        }
      }
    }
    return count;
  }
}

