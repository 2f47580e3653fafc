/**
 * The copy engine: moves an image, a whole index, its referrers or every tag from an `ImageSource` to an
 * `ImageDestination`. Blobs go first, in parallel (bounded), skipped when the destination has them; a blob
 * shared by several manifests is copied once. A manifest is written only after everything it references
 * (children before their index). Manifest digests are checked when fetched by digest; blob digests are checked
 * by the destination while it writes (see `ImageDestination.putBlob`).
 */
import type { Digest } from '../spec/digest.ts';
import { digestOf, isDigest } from '../spec/digest.ts';
import { type Descriptor, parseManifest } from '../spec/manifest.ts';
import { INDEX_TYPES } from '../spec/media-types.ts';
import type { BlobDesc, ImageDestination, ImageSource, ManifestData } from './transport.ts';

/** One blob's progress: `skip` (already there), `mount`, `transfer` (repeated as bytes move), then `done`. */
export interface ProgressEvent {
  digest: Digest;
  mediaType: string;
  total: number;
  done: number;
  phase: 'skip' | 'mount' | 'transfer' | 'done';
}

export interface CopyOptions {
  /** `os/arch[/variant]`: copy only that image of an index; the destination gets the single-platform manifest. */
  platform?: string;
  /** Blobs in flight at once (default 4). */
  concurrency?: number;
  /** Also copy the manifests whose subject is a copied manifest (when the source can list them). */
  referrers?: boolean;
  /** Repository to mount blobs from, for destinations that support mounts (same registry). */
  mountFrom?: string;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
}

export interface CopyStats {
  manifests: number;
  referrers: number;
  blobsTransferred: number;
  blobsSkipped: number;
  blobsMounted: number;
  bytesTransferred: number;
}

export interface CopyResult extends CopyStats {
  /** Digest of the root manifest written (the selected platform's with `platform`). */
  digest: Digest;
  mediaType: string;
}

/** A platform as `os/arch[/variant]`. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export function parsePlatform(s: string): Platform {
  const [os, architecture, variant, extra] = s.split('/');
  if (!os || !architecture || extra !== undefined) throw new Error(`platform ${JSON.stringify(s)} is not os/arch[/variant]`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** The host's platform, as skopeo picks one when a single-image destination gets an index. */
export function hostPlatform(): string {
  const arch = ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[process.arch] ?? process.arch;
  return `linux/${arch}`;
}

function platformMatches(want: Platform, p: unknown): boolean {
  if (typeof p !== 'object' || p === null) return false;
  const got = p as { os?: string; architecture?: string; variant?: string };
  if (got.os !== want.os || got.architecture !== want.architecture) return false;
  if (want.variant === undefined) return true;
  const norm = (v: string | undefined): string | undefined => (want.architecture === 'arm64' && v === undefined ? 'v8' : v);
  return norm(got.variant) === norm(want.variant);
}

/** Picks the child of an index for `platform`: an exact variant match first, then the first os/arch match. */
export function selectPlatform(children: Descriptor[], platform: string): Descriptor {
  const want = parsePlatform(platform);
  const found = children.find((c) => platformMatches(want, c.platform));
  if (!found) {
    const have = children.map((c) => {
      const p = c.platform as Platform | undefined;
      return p ? [p.os, p.architecture, p.variant].filter(Boolean).join('/') : '?';
    });
    throw new Error(`no image for platform ${platform} in the index (has ${have.join(', ')})`);
  }
  return found;
}

/** Waits for every promise to settle (so nothing is still writing), then rejects with the first failure. */
async function allSettled(ps: Array<Promise<unknown>>): Promise<void> {
  const rs = await Promise.allSettled(ps);
  const failed = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** A counting semaphore. */
class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((ok) => this.waiting.push(ok));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

function verifyManifest(m: ManifestData, expected: Digest | undefined, where: string): void {
  const actual = digestOf(m.bytes);
  if (expected !== undefined && actual !== expected) throw new Error(`${where}: manifest ${expected} hashes to ${actual}`);
  if (m.digest !== actual) throw new Error(`${where}: manifest announced as ${m.digest} hashes to ${actual}`);
}

/** One copy session: shared blob de-duplication and statistics across manifests and tags. */
class Session {
  readonly stats: CopyStats = { manifests: 0, referrers: 0, blobsTransferred: 0, blobsSkipped: 0, blobsMounted: 0, bytesTransferred: 0 };
  private readonly blobs = new Map<string, Promise<void>>();
  private readonly manifestsDone = new Map<string, Promise<void>>();
  private readonly limiter: Limiter;

  constructor(
    private readonly src: ImageSource,
    private readonly dst: ImageDestination,
    private readonly opts: CopyOptions,
  ) {
    this.limiter = new Limiter(Math.max(1, opts.concurrency ?? 4));
  }

  private emit(e: ProgressEvent): void {
    this.opts.onProgress?.(e);
  }

  copyBlob(desc: BlobDesc): Promise<void> {
    let p = this.blobs.get(desc.digest);
    if (!p) {
      p = this.limiter.run(() => this.transferBlob(desc));
      this.blobs.set(desc.digest, p);
    }
    return p;
  }

  private async transferBlob(desc: BlobDesc): Promise<void> {
    const { signal } = this.opts;
    signal?.throwIfAborted();
    const base = { digest: desc.digest, mediaType: desc.mediaType, total: desc.size };
    const have = await this.dst.hasBlob(desc.digest, signal);
    if (have !== undefined && have === desc.size) {
      this.stats.blobsSkipped++;
      this.emit({ ...base, done: desc.size, phase: 'skip' });
      return;
    }
    if (this.dst.mountBlob && this.opts.mountFrom !== undefined && (await this.dst.mountBlob(desc, this.opts.mountFrom, signal))) {
      this.stats.blobsMounted++;
      this.emit({ ...base, done: desc.size, phase: 'mount' });
      return;
    }
    let opened = 0;
    let moved = 0;
    await this.dst.putBlob(
      desc,
      async (offset) => {
        opened = offset;
        const r = await this.src.openBlob(desc, offset, signal);
        return r.stream;
      },
      {
        signal,
        onProgress: (done) => {
          moved = Math.max(moved, done - opened);
          this.emit({ ...base, done, phase: 'transfer' });
        },
      },
    );
    this.stats.blobsTransferred++;
    this.stats.bytesTransferred += moved;
    this.emit({ ...base, done: desc.size, phase: 'done' });
  }

  /** Copies a manifest and everything under it; `tag` and `root` say how the destination names it. */
  async copyManifest(m: ManifestData, target: { tag?: string; root: boolean }): Promise<ManifestData> {
    const parsed = parseManifest(m.bytes, m.mediaType);
    if (INDEX_TYPES.has(parsed.mediaType)) {
      const platform = this.opts.platform ?? (this.dst.supportsIndex ? undefined : hostPlatform());
      if (platform !== undefined) {
        const child = selectPlatform(parsed.manifests, platform);
        return this.copyManifest(await this.fetchChild(child), target);
      }
      // Children in parallel (their blobs share the limiter), then the index.
      await allSettled(parsed.manifests.map((c) => this.copyChild(c)));
    } else {
      await allSettled(parsed.blobs.map((b) => this.copyBlob({ digest: b.digest, size: b.size, mediaType: b.mediaType })));
    }
    await this.dst.putManifest(target, m.bytes, parsed.mediaType, this.opts.signal);
    this.stats.manifests++;
    if (this.opts.referrers) await this.copyReferrers(m.digest);
    return { ...m, mediaType: parsed.mediaType };
  }

  private async fetchChild(d: Descriptor): Promise<ManifestData> {
    const child = await this.src.getManifest(d.digest, this.opts.signal);
    verifyManifest(child, d.digest, this.src.name);
    return child;
  }

  private copyChild(d: Descriptor): Promise<void> {
    let p = this.manifestsDone.get(d.digest);
    if (!p) {
      p = this.fetchChild(d).then((c) => this.copyManifest(c, { root: false }).then(() => undefined));
      this.manifestsDone.set(d.digest, p);
    }
    return p;
  }

  private async copyReferrers(subject: Digest): Promise<void> {
    if (!this.src.referrers) return;
    const list = await this.src.referrers(subject, this.opts.signal);
    for (const r of list) {
      if (this.manifestsDone.has(r.digest)) continue;
      const p = this.fetchChild(r).then((m) => this.copyManifest(m, { root: true }).then(() => undefined));
      this.manifestsDone.set(r.digest, p);
      await p;
      this.stats.referrers++;
    }
  }
}

async function finish<T>(dst: ImageDestination, work: () => Promise<T>): Promise<T> {
  try {
    const out = await work();
    await dst.commit?.();
    return out;
  } catch (e) {
    await dst.abort?.().catch(() => undefined);
    throw e;
  }
}

/**
 * Copies the manifest `srcRef` names (a tag, a digest, or `undefined` for the source's only image) to `dst`,
 * naming it `dstRef` there (a tag; `undefined` stores it untagged). Indexes are copied whole unless
 * `opts.platform` selects one image, or the destination holds single images only (then the host platform is
 * selected, as skopeo does). Commits the destination on success and aborts it on failure.
 */
export async function copyImage(src: ImageSource, srcRef: string | undefined, dst: ImageDestination, dstRef: string | undefined, opts: CopyOptions = {}): Promise<CopyResult> {
  const session = new Session(src, dst, opts);
  return finish(dst, async () => {
    const m = await src.getManifest(srcRef, opts.signal);
    verifyManifest(m, srcRef !== undefined && isDigest(srcRef) ? srcRef : undefined, src.name);
    const written = await session.copyManifest(m, { tag: dstRef, root: true });
    return { ...session.stats, digest: digestOf(written.bytes), mediaType: written.mediaType };
  });
}

/** Copies every tag of `src` under the same tag to `dst` (blobs shared between tags move once). */
export async function copyAllTags(src: ImageSource, dst: ImageDestination, opts: CopyOptions = {}): Promise<{ tags: Array<{ tag: string; digest: Digest }> } & CopyStats> {
  const session = new Session(src, dst, opts);
  return finish(dst, async () => {
    const tags: Array<{ tag: string; digest: Digest }> = [];
    for (const tag of await src.listTags(opts.signal)) {
      const m = await src.getManifest(tag, opts.signal);
      verifyManifest(m, undefined, src.name);
      const written = await session.copyManifest(m, { tag, root: true });
      tags.push({ tag, digest: digestOf(written.bytes) });
    }
    return { tags, ...session.stats };
  });
}
