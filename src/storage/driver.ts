/**
 * The StorageDriver interface (after distribution's storagedriver.go, kept small).
 * Paths are absolute, `/`-separated, and validated by {@link checkedDriver} before any driver sees them.
 * Drivers know nothing of digests or repositories.
 */
import type { Readable, Writable } from 'node:stream';

export interface FileInfo {
  path: string;
  size: number;
  modTime: Date;
  isDir: boolean;
  /**
   * An opaque token that changes whenever the entry changes (for a directory: whenever an entry is added or
   * removed), when the driver can provide one; lets callers cache listings safely.
   */
  version?: string;
}

export interface IoOptions {
  signal?: AbortSignal;
}

export interface WriterOptions {
  /** Continue the file (resumable uploads) instead of truncating it. */
  append?: boolean;
  /**
   * Hands the written chunks back, in the order they were written, once the writer has no more use for them
   * (they are in the file, or copied into a part buffer); from then on the callee owns them and may free their
   * memory. A returned promise holds the writer (and so the body piped into it) back until it settles: the
   * callee's backpressure. Used to hash an upload after its bytes are stored, off the event loop.
   */
  onWritten?: (chunks: Buffer[]) => void | Promise<void>;
  /** The bytes the caller expects to write (a request's Content-Length), when it knows. */
  expectedBytes?: number;
}

/** A writer for one file. Bytes become durable and visible only at `commit()`. */
export interface FileWriter {
  /** The stream to pipe bytes into. */
  readonly stream: Writable;
  /** Bytes in the file so far, including those present before an append. */
  size(): number;
  /** Flushes to stable storage (fsync) and closes. The file keeps its path. */
  commit(): Promise<void>;
  /** Closes without flushing and removes the file. */
  cancel(): Promise<void>;
  /** Closes, keeping what was written (for resumable uploads after a broken request). */
  close(): Promise<void>;
  /**
   * Closes and drops every byte written through this writer, committed or not: an append is cut back to the
   * size the file had when the writer opened; a file opened without `append` is removed, as by `cancel`.
   * For a write that failed (or whose commit failed), so that only acknowledged bytes stay.
   */
  discard(): Promise<void>;
}

export interface SendOptions {
  start: number;
  end: number;
  /** Called once the file is open, before the first byte is written (e.g. to write response headers). */
  onOpen?: () => void;
}

export interface StorageDriver {
  readonly name: string;
  /** Reads a whole small file. Throws {@link PathNotFoundError}; refuses files above `maxSize` (default 4 MiB). */
  getContent(path: string, opts?: IoOptions & { maxSize?: number }): Promise<Buffer>;
  /** Atomically replaces a file's content (temporary name, fsync, rename), creating parents. */
  putContent(path: string, data: Uint8Array, opts?: IoOptions): Promise<void>;
  /**
   * Optional: puts files in order, each durable before the next becomes visible, as `putContent` one after the
   * other would, but free to prepare them all at once first. A failure puts none of the files after it (the ones
   * before it may or may not be put). Callers use {@link putInOrder}.
   */
  putContents?(files: readonly ContentWrite[], opts?: IoOptions): Promise<void>;
  /** A stream of the file's bytes from `offset` to `end` (inclusive, default end of file). */
  reader(path: string, offset?: number, opts?: IoOptions & { end?: number; highWaterMark?: number }): Promise<Readable>;
  /** Opens a writer; with `append` it continues an existing file, otherwise truncates or creates it. */
  writer(path: string, opts?: IoOptions & WriterOptions): Promise<FileWriter>;
  /** Size and kind of a path. Throws {@link PathNotFoundError}. */
  stat(path: string, opts?: IoOptions): Promise<FileInfo>;
  /** Names (not paths) of a directory's direct children, unordered. Throws {@link PathNotFoundError}. */
  list(path: string, opts?: IoOptions): Promise<string[]>;
  /** Moves a file, replacing the destination, creating its parents. Atomic where the backend allows. */
  move(src: string, dst: string, opts?: IoOptions): Promise<void>;
  /** Deletes a file or a whole subtree. Throws {@link PathNotFoundError} when absent. */
  delete(path: string, opts?: IoOptions): Promise<void>;
  /**
   * Optional fast path: writes bytes `[start, end]` (inclusive) of a file into `dest` (not ending it).
   * Throws {@link PathNotFoundError} before writing anything when the file is absent.
   */
  sendTo?(path: string, dest: Writable, opts: SendOptions): Promise<void>;
  /**
   * Optional: removes a directory only when it is empty, atomically (never an entry in it); true when removed.
   * Drivers without real directories (object stores, memory) leave it out.
   */
  removeEmptyDir?(path: string): Promise<boolean>;
  /** A URL a client may be redirected to for reading, or undefined when the driver has none. */
  redirectUrl(path: string, method: 'GET' | 'HEAD'): Promise<string | undefined>;
}

/** One file of {@link StorageDriver.putContents}. */
export interface ContentWrite {
  path: string;
  data: Uint8Array;
}

/** Puts files in order, each durable before the next becomes visible: the driver's `putContents`, or `putContent` in turn. */
export function putInOrder(driver: StorageDriver, files: readonly ContentWrite[], opts?: IoOptions): Promise<void> {
  return driver.putContents ? driver.putContents(files, opts) : putEach(driver, files, opts);
}

/** `putContent` of each file in turn: `putContents` for a driver with nothing better. */
export async function putEach(driver: StorageDriver, files: readonly ContentWrite[], opts?: IoOptions): Promise<void> {
  for (const f of files) await driver.putContent(f.path, f.data, opts);
}

export class PathNotFoundError extends Error {
  readonly path: string;
  constructor(path: string) {
    super(`path not found: ${path}`);
    this.name = 'PathNotFoundError';
    this.path = path;
  }
}

export class InvalidPathError extends Error {
  readonly path: string;
  constructor(path: string) {
    super(`invalid path: ${JSON.stringify(path.slice(0, 300))}`);
    this.name = 'InvalidPathError';
    this.path = path;
  }
}

export function isNotFound(e: unknown): e is PathNotFoundError {
  return e instanceof PathNotFoundError;
}
