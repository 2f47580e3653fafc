/**
 * The one wrapper that validates every path for every driver: absolute, no empty, `.` or `..`
 * components, a conservative character set, bounded length. Nothing outside the root can be named.
 */
import { InvalidPathError, type StorageDriver } from './driver.ts';

const PATH = /^(?:\/[A-Za-z0-9._:+-]+)+$|^\/$/;
const MAX_PATH = 1024;

export function checkPath(path: string): string {
  if (path.length > MAX_PATH || !PATH.test(path)) throw new InvalidPathError(path);
  for (const c of path.split('/')) if (c === '.' || c === '..') throw new InvalidPathError(path);
  return path;
}

export function checkedDriver(inner: StorageDriver): StorageDriver {
  return {
    name: inner.name,
    getContent: (p, o) => inner.getContent(checkPath(p), o),
    putContent: (p, d, o) => inner.putContent(checkPath(p), d, o),
    reader: (p, off, o) => inner.reader(checkPath(p), off, o),
    writer: (p, o) => inner.writer(checkPath(p), o),
    stat: (p, o) => inner.stat(checkPath(p), o),
    list: (p, o) => inner.list(checkPath(p), o),
    move: (s, d, o) => inner.move(checkPath(s), checkPath(d), o),
    delete: (p, o) => inner.delete(checkPath(p), o),
    redirectUrl: (p, m) => inner.redirectUrl(checkPath(p), m),
  };
}
