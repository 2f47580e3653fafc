/** A depth-first walk over any driver (after distribution's storagedriver.WalkFallback). */
import { isNotFound, type FileInfo, type StorageDriver } from './driver.ts';

/**
 * Every entry below `path` (files and directories), children in byte order, each directory before its
 * contents. Entries that vanish during the walk are skipped. `skip(info)` returning true prunes a directory.
 */
export async function* walk(driver: StorageDriver, path: string, skip?: (info: FileInfo) => boolean): AsyncGenerator<FileInfo> {
  let names: string[];
  try {
    names = await driver.list(path);
  } catch (e) {
    if (isNotFound(e)) return;
    throw e;
  }
  names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    const child = path === '/' ? `/${name}` : `${path}/${name}`;
    let info: FileInfo;
    try {
      info = await driver.stat(child);
    } catch (e) {
      if (isNotFound(e)) continue;
      throw e;
    }
    yield info;
    if (info.isDir && !skip?.(info)) yield* walk(driver, child, skip);
  }
}
