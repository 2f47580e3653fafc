/** The in-memory driver: for tests and throwaway registries. Content is lost at exit. */
import { Readable, Writable } from 'node:stream';
import { type FileInfo, type FileWriter, PathNotFoundError, type StorageDriver } from './driver.ts';

interface Entry {
  chunks: Buffer[];
  size: number;
  modTime: Date;
}

export function inmemoryDriver(): StorageDriver {
  const files = new Map<string, Entry>();
  const bytes = (e: Entry): Buffer => {
    if (e.chunks.length > 1) e.chunks = [Buffer.concat(e.chunks)];
    return e.chunks[0] ?? Buffer.alloc(0);
  };
  const isDir = (path: string): boolean => {
    const prefix = path === '/' ? '/' : `${path}/`;
    for (const k of files.keys()) if (k.startsWith(prefix)) return true;
    return false;
  };
  const get = (path: string): Entry => {
    const e = files.get(path);
    if (!e) throw new PathNotFoundError(path);
    return e;
  };
  return {
    name: 'inmemory',
    async getContent(path, o) {
      const e = get(path);
      if (e.size > (o?.maxSize ?? 4 * 1024 * 1024)) throw new RangeError(`file ${path} is too large`);
      return Buffer.from(bytes(e));
    },
    async putContent(path, data) {
      files.set(path, { chunks: [Buffer.from(data)], size: data.byteLength, modTime: new Date() });
    },
    async reader(path, offset = 0, o) {
      const e = get(path);
      const b = bytes(e);
      const end = o?.end === undefined ? b.length : o.end + 1;
      return Readable.from([b.subarray(offset, end)].filter((x) => x.length > 0));
    },
    async writer(path, o): Promise<FileWriter> {
      let entry = o?.append ? files.get(path) : undefined;
      if (!entry) {
        entry = { chunks: [], size: 0, modTime: new Date() };
        files.set(path, entry);
      }
      const e = entry;
      const initial = e.size;
      const stream = new Writable({
        write(chunk: Buffer, _enc, cb) {
          e.chunks.push(Buffer.from(chunk));
          e.size += chunk.length;
          e.modTime = new Date();
          const held = o?.onWritten?.([chunk]);
          if (held) held.then(() => cb(), cb);
          else cb();
        },
      });
      return {
        stream,
        size: () => e.size,
        commit: async () => undefined,
        close: async () => undefined,
        cancel: async () => {
          files.delete(path);
        },
        discard: async () => {
          if (!o?.append) {
            files.delete(path);
            return;
          }
          e.chunks = [Buffer.from(bytes(e).subarray(0, initial))];
          e.size = initial;
        },
      };
    },
    async stat(path): Promise<FileInfo> {
      const e = files.get(path);
      if (e) return { path, size: e.size, modTime: e.modTime, isDir: false };
      if (isDir(path)) return { path, size: 0, modTime: new Date(0), isDir: true };
      throw new PathNotFoundError(path);
    },
    async list(path) {
      const prefix = path === '/' ? '/' : `${path}/`;
      const names = new Set<string>();
      for (const k of files.keys()) {
        if (k.startsWith(prefix)) names.add(k.slice(prefix.length).split('/')[0]!);
      }
      if (names.size === 0) throw new PathNotFoundError(path);
      return [...names];
    },
    async move(src, dst) {
      const e = get(src);
      files.delete(src);
      files.set(dst, e);
    },
    async delete(path) {
      let found = files.delete(path);
      const prefix = `${path}/`;
      for (const k of [...files.keys()]) {
        if (k.startsWith(prefix)) {
          files.delete(k);
          found = true;
        }
      }
      if (!found) throw new PathNotFoundError(path);
    },
    async redirectUrl() {
      return undefined;
    },
  };
}

