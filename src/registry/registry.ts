/** The registry domain over one storage driver. Knows nothing of HTTP. */
import type { RepoName } from '../spec/names.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { BlobStore } from './blobs.ts';
import { catalogPage, type CatalogPage, uploadDirs } from './catalog.ts';
import { type ListingCache, type RegistryOptions, listOrEmpty, remove } from './context.ts';
import { ManifestStore } from './manifests.ts';
import { CacheGuard } from './descriptor-cache.ts';
import * as P from './paths.ts';

export interface PurgeResult {
  purged: string[];
}

export class Registry {
  readonly driver: StorageDriver;
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly deleteEnabled: boolean;
  private readonly descriptors: CacheGuard | undefined;

  constructor(opts: RegistryOptions) {
    this.driver = opts.driver;
    this.deleteEnabled = opts.deleteEnabled;
    this.descriptors = opts.descriptorCache && new CacheGuard(opts.descriptorCache, opts.onCacheError);
    this.blobs = new BlobStore(opts.driver, this.descriptors);
    this.manifests = new ManifestStore(opts.driver, this.blobs, opts.manifestCacheBytes ?? 64 * 1024 * 1024, this.descriptors);
  }

  /** Releases what the registry holds open (the descriptor cache's connection). */
  async close(): Promise<void> {
    await this.descriptors?.close();
  }

  private readonly listings: ListingCache = new Map();

  catalog(n: number, last?: string): Promise<CatalogPage> {
    return catalogPage(this.driver, n, last, this.listings);
  }

  /** Rebuilds the referrer index of every repository from its manifests; returns referrers indexed. */
  async rebuildReferrers(): Promise<{ repositories: number; referrers: number }> {
    let repositories = 0;
    let referrers = 0;
    let last: string | undefined;
    for (;;) {
      const page = await this.catalog(1000, last);
      for (const name of page.repositories) {
        repositories++;
        referrers += await this.manifests.rebuildReferrers(name as RepoName);
      }
      if (!page.more || page.repositories.length === 0) break;
      last = page.repositories[page.repositories.length - 1];
    }
    return { repositories, referrers };
  }

  /**
   * Removes upload sessions whose `startedat` is older than `olderThanMs` (distribution's upload purging).
   * With `dryRun`, only reports them.
   */
  async purgeUploads(olderThanMs: number, dryRun = false, now = Date.now()): Promise<PurgeResult> {
    const purged: string[] = [];
    for await (const repo of uploadDirs(this.driver)) {
      const name = repo as RepoName;
      for (const id of await listOrEmpty(this.driver, P.uploadsDir(name))) {
        let started = NaN;
        try {
          started = Date.parse((await this.driver.getContent(`${P.uploadsDir(name)}/${id}/startedat`, { maxSize: 256 })).toString('utf8'));
        } catch {
          // No readable startedat: judge by the directory's modification time.
          try {
            started = (await this.driver.stat(`${P.uploadsDir(name)}/${id}`)).modTime.getTime();
          } catch {
            continue;
          }
        }
        if (Number.isNaN(started) || now - started <= olderThanMs) continue;
        purged.push(`${name}/${id}`);
        if (!dryRun) await remove(this.driver, `${P.uploadsDir(name)}/${id}`);
      }
    }
    return { purged };
  }
}
