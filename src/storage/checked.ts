/**
 * The one wrapper that validates every path for every driver: absolute, no empty, `.` or `..`
 * components, a conservative character set, bounded length. Nothing outside the root can be named.
 */
import type { Writable } from 'node:stream';
import { memoize } from '../spec/memo.ts';
import { InvalidPathError, putEach, type SendOptions, type StorageDriver } from './driver.ts';

const PATH = /^(?:\/[A-Za-z0-9._:+-]+)+$|^\/$/;
const DOT_COMPONENT = /\/\.\.?(?:\/|$)/;
const MAX_PATH = 1024;

/** Memoised: the registry asks for the same paths (the same strings, see ManifestStore's lookups) again and again. */
const valid = memoize((path: string): boolean => path.length <= MAX_PATH && PATH.test(path) && !DOT_COMPONENT.test(path));

export function checkPath(path: string): string {
  if (!valid(path)) throw new InvalidPathError(path);
  return path;
}

/** A rejection for an invalid path, else undefined (`invalid(p) ?? inner.op(p)`). */
function invalid(path: string): Promise<never> | undefined {
  return valid(path) ? undefined : Promise.reject(new InvalidPathError(path));
}

/** A rejection naming the first invalid path of several, else undefined. */
function invalidAny(paths: readonly string[]): Promise<never> | undefined {
  const bad = paths.find((p) => !valid(p));
  return bad === undefined ? undefined : invalid(bad);
}

/**
 * Plain functions handing back the inner driver's promise, not `async` wrappers: those added a promise and its
 * microtask turns to every storage call, several per manifest GET. Every driver method is `async`, so none
 * throws synchronously.
 */
export function checkedDriver(inner: StorageDriver): StorageDriver {
  const sendTo = inner.sendTo?.bind(inner);
  const removeEmptyDir = inner.removeEmptyDir?.bind(inner);
  const putContents = inner.putContents?.bind(inner);
  return {
    ...(sendTo ? { sendTo: (p: string, dest: Writable, o: SendOptions) => invalid(p) ?? sendTo(p, dest, o) } : {}),
    ...(removeEmptyDir ? { removeEmptyDir: (p: string) => invalid(p) ?? removeEmptyDir(p) } : {}),
    name: inner.name,
    getContent: (p, o) => invalid(p) ?? inner.getContent(p, o),
    putContent: (p, d, o) => invalid(p) ?? inner.putContent(p, d, o),
    // Every path checked before any file is put.
    putContents: (fs, o) => invalidAny(fs.map((f) => f.path)) ?? (putContents ? putContents(fs, o) : putEach(inner, fs, o)),
    reader: (p, off, o) => invalid(p) ?? inner.reader(p, off, o),
    writer: (p, o) => invalid(p) ?? inner.writer(p, o),
    stat: (p, o) => invalid(p) ?? inner.stat(p, o),
    list: (p, o) => invalid(p) ?? inner.list(p, o),
    move: (s, d, o) => invalid(s) ?? invalid(d) ?? inner.move(s, d, o),
    delete: (p, o) => invalid(p) ?? inner.delete(p, o),
    redirectUrl: (p, m) => invalid(p) ?? inner.redirectUrl(p, m),
  };
}
