/**
 * The one wrapper that validates every path for every driver: absolute, no empty, `.` or `..`
 * components, a conservative character set, bounded length. Nothing outside the root can be named.
 */
import type { Writable } from 'node:stream';
import { InvalidPathError, type SendOptions, type StorageDriver } from './driver.ts';

const PATH = /^(?:\/[A-Za-z0-9._:+-]+)+$|^\/$/;
const DOT_COMPONENT = /\/\.\.?(?:\/|$)/;
const MAX_PATH = 1024;

export function checkPath(path: string): string {
  if (path.length > MAX_PATH || !PATH.test(path) || DOT_COMPONENT.test(path)) throw new InvalidPathError(path);
  return path;
}

export function checkedDriver(inner: StorageDriver): StorageDriver {
  const sendTo = inner.sendTo?.bind(inner);
  const removeEmptyDir = inner.removeEmptyDir?.bind(inner);
  return {
    ...(sendTo ? { sendTo: async (p: string, dest: Writable, o: SendOptions) => sendTo(checkPath(p), dest, o) } : {}),
    ...(removeEmptyDir ? { removeEmptyDir: async (p: string) => removeEmptyDir(checkPath(p)) } : {}),
    name: inner.name,
    getContent: async (p, o) => inner.getContent(checkPath(p), o),
    putContent: async (p, d, o) => inner.putContent(checkPath(p), d, o),
    reader: async (p, off, o) => inner.reader(checkPath(p), off, o),
    writer: async (p, o) => inner.writer(checkPath(p), o),
    stat: async (p, o) => inner.stat(checkPath(p), o),
    list: async (p, o) => inner.list(checkPath(p), o),
    move: async (s, d, o) => inner.move(checkPath(s), checkPath(d), o),
    delete: async (p, o) => inner.delete(checkPath(p), o),
    redirectUrl: async (p, m) => inner.redirectUrl(checkPath(p), m),
  };
}
