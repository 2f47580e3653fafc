/** What every registry module shares: the (checked) driver, options and small helpers. */
import type { StorageDriver } from '../storage/driver.ts';
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
}

export interface Ctx {
  driver: StorageDriver;
}

/** Reads a link file, returning the digest it holds or undefined when absent or malformed. */
export async function readLink(driver: StorageDriver, path: string): Promise<Digest | undefined> {
  try {
    const s = (await driver.getContent(path, { maxSize: 1024 })).toString('utf8').trim();
    return tryParseDigest(s)?.digest;
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
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
