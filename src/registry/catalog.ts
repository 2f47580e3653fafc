/**
 * The catalog: repositories are directories under `repositories/` that hold `_manifests`; names nest.
 * Walks in catalog order (path components compared byte-wise, so `a` < `a/b` < `a-b`) and prunes
 * everything at or before `last`, so each page costs O(page + depth), not O(registry).
 */
import { type StorageDriver } from '../storage/driver.ts';
import { byteCompare, type ListingCache, listOrEmpty, sortedListing } from './context.ts';

/** Only directories with at least this many entries have their listing cached (most repository directories are small). */
const LARGE_DIRECTORY = 64;
import { REPOSITORIES } from './paths.ts';

/** Compares component lists; a proper prefix sorts first. */
function compareComponents(a: string[], b: string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = byteCompare(a[i]!, b[i]!);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

export interface CatalogPage {
  repositories: string[];
  /** True when more repositories follow the last one returned. */
  more: boolean;
}

export async function catalogPage(driver: StorageDriver, n: number, last?: string, cache?: ListingCache): Promise<CatalogPage> {
  const lastParts = last ? last.split('/') : undefined;
  const out: string[] = [];
  let more = false;

  /** Visits `parts` (a directory under repositories/); returns false to stop the walk. */
  async function visit(parts: string[], children: string[]): Promise<boolean> {
    const entries = children.filter((c) => !c.startsWith('_') && !c.endsWith('.tmp'));
    for (const entry of entries) {
      const path = [...parts, entry];
      let cmp = 1;
      if (lastParts) {
        const prefix = lastParts.slice(0, path.length);
        cmp = compareComponents(path, prefix);
        if (cmp < 0) continue; // entirely before `last`
      }
      const grand = await sortedListing(driver, `${REPOSITORIES}/${path.join('/')}`, cache, LARGE_DIRECTORY);
      if (grand.length === 0) continue;
      // cmp === 0: `path` is `last` or one of its ancestors; itself is not emitted, its subtree may be.
      const afterLast = !lastParts || compareComponents(path, lastParts) > 0;
      if (afterLast && grand.includes('_manifests')) {
        if (out.length >= n) {
          more = true;
          return false;
        }
        out.push(path.join('/'));
      }
      if (!(await visit(path, grand))) return false;
    }
    return true;
  }

  if (n > 0) await visit([], await sortedListing(driver, REPOSITORIES, cache, LARGE_DIRECTORY));
  else more = (await listOrEmpty(driver, REPOSITORIES)).length > 0;
  return { repositories: out, more };
}

/** Every repository directory (with or without `_manifests`) that has `_uploads`, with its name. */
export async function* uploadDirs(driver: StorageDriver): AsyncGenerator<string> {
  async function* walk(parts: string[]): AsyncGenerator<string> {
    const children = await listOrEmpty(driver, parts.length ? `${REPOSITORIES}/${parts.join('/')}` : REPOSITORIES);
    if (parts.length && children.includes('_uploads')) yield parts.join('/');
    for (const c of children.sort(byteCompare)) {
      if (c.startsWith('_')) continue;
      yield* walk([...parts, c]);
    }
  }
  yield* walk([]);
}
