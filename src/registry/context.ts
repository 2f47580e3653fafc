/** What every registry module shares: the (checked) driver, options and small helpers. */
import type { StorageDriver } from '../storage/driver.ts';
import type { BlobDescriptorCache } from './descriptor-cache.ts';
import { isNotFound } from '../storage/driver.ts';
import type { Digest } from '../spec/digest.ts';
import { tryParseDigest } from '../spec/digest.ts';

export interface RegistryOptions {
  /** A driver already wrapped by `checkedDriver`. */
  driver: StorageDriver;
  /** Whether deletes are allowed (`storage.delete.enabled`). */
  deleteEnabled: boolean;
  /** Bytes of manifest content kept in memory by digest (content is immutable). Default 64 MiB. */
  manifestCacheBytes?: number;
  /** distribution's blob-descriptor cache (`storage.cache.blobdescriptor`); none when undefined. */
  descriptorCache?: BlobDescriptorCache;
  /** Told of every cache failure the registry answered around (the caller throttles and logs). */
  onCacheError?: (err: unknown, op: string) => void;
}

/**
 * What each link file's bytes say. Drivers that cache small files hand back the same Buffer while the file is
 * unchanged, so a link read on every pull is parsed once; a new Buffer is a new key.
 */
const parsedLinks = new WeakMap<Buffer, Digest | null>();

/** Reads a link file, returning the digest it holds or undefined when absent or malformed. */
export async function readLink(driver: StorageDriver, path: string): Promise<Digest | undefined> {
  let data: Buffer;
  try {
    data = await driver.getContent(path, { maxSize: 1024 });
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
  let d = parsedLinks.get(data);
  if (d === undefined) {
    d = tryParseDigest(data.toString('utf8').trim())?.digest ?? null;
    parsedLinks.set(data, d);
  }
  return d ?? undefined;
}

export async function exists(driver: StorageDriver, path: string): Promise<boolean> {
  try {
    await driver.stat(path);
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/** Deletes a path, ignoring absence. */
export async function remove(driver: StorageDriver, path: string): Promise<void> {
  try {
    await driver.delete(path);
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
}

/** Lists a directory, returning [] when absent. Ignores the filesystem driver's `*.tmp` files. */
export async function listOrEmpty(driver: StorageDriver, path: string): Promise<string[]> {
  try {
    return (await driver.list(path)).filter((n) => !n.endsWith('.tmp'));
  } catch (e) {
    if (isNotFound(e)) return [];
    throw e;
  }
}

/** Byte-wise string comparison (the order distribution's listings use). */
export function byteCompare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Sorted directory listings, reused while the directory's version token (from `stat`) is unchanged. */
export type ListingCache = Map<string, { version?: string; entries: string[] }>;
const LISTING_CACHE_PATHS = 1024;

/**
 * A directory's entries in byte order ([] when absent). A directory with at least `minEntries` entries is
 * remembered; from the next visit on its listing is reused while its version token is unchanged. The token
 * is read before listing, so a change after it makes the next token differ: never a stale hit.
 */
export async function sortedListing(driver: StorageDriver, path: string, cache: ListingCache | undefined, minEntries = 0): Promise<string[]> {
  const known = cache?.get(path);
  if (!cache || !known) {
    const entries = (await listOrEmpty(driver, path)).sort(byteCompare);
    if (cache && entries.length >= minEntries) {
      if (cache.size >= LISTING_CACHE_PATHS) cache.delete(cache.keys().next().value as string);
      cache.set(path, { entries: [] });
    }
    return entries;
  }
  const version = await driver.stat(path).then(
    (s) => s.version,
    () => undefined,
  );
  if (version !== undefined && known.version === version) return known.entries;
  const entries = (await listOrEmpty(driver, path)).sort(byteCompare);
  known.version = version;
  known.entries = version === undefined ? [] : entries;
  return entries;
}
