/**
 * A registry repository as a copy endpoint, over `berth/client` (the adapter `transport.ts` describes):
 * HEAD to skip blobs the destination has, a cross-repository mount first when both ends are on one registry,
 * streaming verified reads (ranged to resume), and pushes that are monolithic for small blobs and chunked for
 * large ones, resuming after a broken chunk from what the registry acknowledged by reopening the source there.
 */
import type { Readable } from 'node:stream';
import type { RegistryClient } from '../client/client.ts';
import { type Digest, digestOf } from '../spec/digest.ts';
import type { Descriptor } from '../spec/manifest.ts';
import type { BlobDesc, BlobOpener, BlobRead, ImageEndpoint, ManifestData, ManifestTarget, PutBlobOptions } from './transport.ts';

/**
 * Where upload sessions in progress are remembered (by registry, repository and digest), so a copy run again
 * after its process was killed continues each blob from what the registry kept instead of from zero.
 */
export interface UploadJournal {
  get(key: string): string | undefined;
  set(key: string, location: string): void;
  delete(key: string): void;
}

export class RegistryEndpoint implements ImageEndpoint {
  readonly name: string;
  readonly supportsIndex = true;

  constructor(
    private readonly client: RegistryClient,
    private readonly repo: string,
    private readonly journal?: UploadJournal,
  ) {
    this.name = `${client.url.host}/${repo}`;
  }

  async getManifest(ref: string | undefined, signal?: AbortSignal): Promise<ManifestData> {
    if (ref === undefined) throw new Error(`${this.name}: name a tag or digest`);
    const m = await this.client.getManifest(this.repo, ref, signal ? { signal } : {});
    return { bytes: m.bytes, mediaType: m.mediaType, digest: m.digest };
  }

  async openBlob(desc: BlobDesc, offset = 0, signal?: AbortSignal): Promise<BlobRead> {
    // Every destination verifies size and digest while it writes (transport.ts), so the read is not hashed too.
    const d = await this.client.getBlob(this.repo, desc.digest, {
      size: desc.size,
      verify: false,
      ...(offset > 0 ? { range: { start: offset } } : {}),
      ...(signal ? { signal } : {}),
    });
    return { stream: d.stream, size: desc.size };
  }

  async listTags(signal?: AbortSignal): Promise<string[]> {
    const tags: string[] = [];
    for await (const t of this.client.tags(this.repo, signal ? { signal } : {})) tags.push(t);
    return tags;
  }

  async referrers(digest: Digest, signal?: AbortSignal): Promise<Descriptor[]> {
    return (await this.client.referrers(this.repo, digest, signal ? { signal } : {})).manifests;
  }

  async hasBlob(digest: Digest, signal?: AbortSignal): Promise<number | undefined> {
    return (await this.client.headBlob(this.repo, digest, signal))?.size;
  }

  async mountBlob(desc: BlobDesc, fromRepo: string, signal?: AbortSignal): Promise<boolean> {
    return this.client.mountBlob(this.repo, desc.digest, fromRepo, signal);
  }

  async putBlob(desc: BlobDesc, open: BlobOpener, opts: PutBlobOptions = {}): Promise<void> {
    const key = `${this.client.url.origin}/${this.repo}@${desc.digest}`;
    const session = this.journal?.get(key);
    const push = this.client.pushBlob(this.repo, (offset: number): Promise<Readable> => open(offset), {
      digest: desc.digest,
      size: desc.size,
      // The engine asked hasBlob already.
      skipExistsCheck: true,
      ...(session ? { session } : {}),
      ...(this.journal ? { onSession: (l: string) => this.journal!.set(key, l) } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    try {
      await push;
    } finally {
      // Done, or failed with its session cancelled: nothing to continue next time.
      this.journal?.delete(key);
    }
  }

  async putManifest(target: ManifestTarget, bytes: Buffer, mediaType: string, signal?: AbortSignal): Promise<Digest> {
    const ref = target.tag ?? digestOf(bytes, 'sha256');
    return (await this.client.putManifest(this.repo, ref, bytes, { mediaType, ...(signal ? { signal } : {}) })).digest;
  }
}
