/**
 * The catalog: repositories are directories under `repositories/` that hold `_manifests`; names nest.
 * Walks in catalog order (path components compared byte-wise, so `a` < `a/b` < `a-b`) and prunes
 * everything at or before `last`, so each page costs O(page + depth), not O(registry).
 */
import { type StorageDriver } from '../storage/driver.ts';
import { byteCompare, type ListingCache, listOrEmpty, sortedListing } from './context.ts';
import { REPOSITORIES } from './paths.ts';

/** Only directories with at least this many entries have their listing cached (most repository directories are small). */
const LARGE_DIRECTORY = 64;
/** Listings of the entries ahead asked for at once while walking a directory. */
const LOOKAHEAD = 16;

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
    /** How entry `i` compares with `last` cut to its depth (< 0: entirely before it, skipped unlisted); memoised. */
    const lastHere = lastParts?.slice(0, parts.length + 1);
    const cmps: number[] = [];
    const cmpAt = (i: number): number => (cmps[i] ??= lastHere ? compareComponents([...parts, entries[i]!], lastHere) : 1);
    // Each entry needs its own listing (is it a repository, what nests in it). Awaited one by one they cost a
    // storage round trip each, so up to LOOKAHEAD listings of the entries ahead are asked for at once; one the
    // page turns out not to need is dropped (its failure ignored, as the walk never reads it).
    const ahead = new Map<number, Promise<string[]>>();
    const listing = (i: number): Promise<string[]> => {
      let p = ahead.get(i);
      if (!p) {
        p = sortedListing(driver, `${REPOSITORIES}/${[...parts, entries[i]!].join('/')}`, cache, LARGE_DIRECTORY);
        p.catch(() => undefined);
        ahead.set(i, p);
      }
      return p;
    };
    let asked = 0;
    for (let i = 0; i < entries.length; i++) {
      const cmp = cmpAt(i);
      if (cmp < 0) continue; // entirely before `last`
      const path = [...parts, entries[i]!];
      // At most as many entries ahead as the page still has room for (each may be a repository), and LOOKAHEAD.
      const want = Math.min(entries.length, i + Math.max(1, Math.min(LOOKAHEAD, n - out.length + 1)));
      for (asked = Math.max(asked, i); asked < want; asked++) if (cmpAt(asked) >= 0) void listing(asked);
      const grand = await listing(i);
      ahead.delete(i);
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
