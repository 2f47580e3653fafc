/**
 * The running sha256 of an upload, computed off the event loop.
 *
 * sha256 costs ~0.6 ns a byte here (1.6 GB/s with the CPU's SHA extensions): on the event loop it was about half
 * of a push's main-thread time, and a push is bound by that one thread while the client leaves the second core
 * part idle. So each process has one hashing thread: the upload's writer hands every batch of chunks back once
 * it is stored (`onWritten`), and the chunks go to the thread in order. A chunk the request gave up, and which
 * alone views its memory, moves there without a copy (its ArrayBuffer is transferred) and is freed there once
 * hashed; any other chunk is copied. Measured on a bare server with `curl -T` pushes of 512 MiB: the main
 * thread's CPU per push fell from 84–113 to 37–45 ticks, and throughput rose from 520–600 to 620–790 MB/s.
 *
 * Backpressure: no more than MAX_BEHIND bytes per process wait for the thread; beyond that `update` returns a
 * promise, which holds the writer and so the request body back. If the thread dies, the hashes it held are lost:
 * `digest` rejects, and the upload is hashed again from storage, as when its running hash was evicted.
 *
 * Uploads that announce fewer than THREAD_MIN bytes are hashed inline: a round trip to the thread would cost
 * more than hashing them. So are uploads that start while the process is writing several others (see
 * THREAD_MAX_UPLOADS).
 */
import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { ownsItsMemory, releaseChunk, releasing } from '../storage/release.ts';

export interface UploadHash {
  /** Takes the next written chunks; `givenUp`: nothing else reads them (their memory may be freed or moved). */
  update(chunks: readonly Buffer[], givenUp: boolean): void | Promise<void>;
  /** The hex digest of every byte taken; ends the hash. Rejects when the hash was lost (the thread died). */
  digest(): Promise<string>;
  /** Forgets the hash (a failed or abandoned upload); updates after it are ignored. */
  drop(): void;
}

/** Uploads announcing fewer bytes than this are hashed on the event loop. */
export const THREAD_MIN = 1024 * 1024;
/**
 * Bytes per process posted to the thread and not yet hashed before writers are held back: two write batches.
 * 8 MiB measured no faster than 2 with `curl -T` pushes of 512 MiB, and kept 4 MiB more resident.
 */
const MAX_BEHIND = 2 * 1024 * 1024;
/**
 * An upload is hashed on the thread only while at most this many uploads (itself included) are being written
 * in the process. With more, the event loop is busy with several bodies and, with a process per core, every
 * core is too: moving the hashing would only add its cost (the thread reads the bytes from another core's
 * cache, and each batch is a message), 241 against 273 MB/s in one bench run of 32 concurrent pushes.
 */
export const THREAD_MAX_UPLOADS = 2;
/**
 * The thread is stopped once no upload has had a hash on it for this long: its V8 isolate keeps ~10 MiB
 * resident, which a process serving pulls and manifests after a push would otherwise carry for its lifetime
 * (and add to whatever that later load needs). The next large upload starts a new thread (~30 ms).
 */
const THREAD_IDLE_MS = 2000;

/** The thread's code (CommonJS, evaluated): hashes by id, frees each moved buffer once hashed, acks bytes. */
const THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
let transfer = ArrayBuffer.prototype.transfer;
if (typeof transfer !== 'function') {
  try {
    require('node:v8').setFlagsFromString('--harmony-rab-gsab-transfer');
    transfer = require('node:vm').runInNewContext('ArrayBuffer.prototype.transfer');
  } catch {}
}
const hashes = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = hashes.get(m.id);
    if (!h) hashes.set(m.id, (h = createHash('sha256')));
    let n = 0;
    for (const ab of m.buffers) {
      n += ab.byteLength;
      h.update(new Uint8Array(ab));
      if (typeof transfer === 'function') try { transfer.call(ab, 0); } catch {}
    }
    parentPort.postMessage({ op: 'ack', n });
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id) ?? createHash('sha256');
    hashes.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.digest('hex') });
  } else if (m.op === 'drop') {
    hashes.delete(m.id);
  }
});
`;

type ThreadReply = { op: 'ack'; n: number } | { op: 'digest'; id: number; hex: string };

class HashThread {
  private readonly worker: Worker;
  private nextId = 1;
  private behind = 0;
  private waiters: (() => void)[] = [];
  private readonly digests = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();
  private dead: Error | undefined;
  private reffed = false;
  /** Hashes begun on the thread and neither digested nor dropped (an upload between PATCHes counts). */
  private open = 0;
  private idle: NodeJS.Timeout | undefined;

  constructor() {
    // Chunks moved here are freed by this process's allocator as on the main thread, so its trim threshold
    // must be raised as release.ts does on first use (else the heap shrinks and is faulted back in per PATCH).
    releasing();
    this.worker = new Worker(THREAD_SOURCE, { eval: true, name: 'berth-hash' });
    this.worker.on('message', (m: ThreadReply) => this.receive(m));
    this.worker.on('error', (e) => this.die(e));
    this.worker.on('exit', (code) => this.die(new Error(`the hashing thread exited (${code})`)));
    // Unref'd after the listeners (adding a 'message' listener refs the worker again): an idle thread never
    // keeps the process alive, a busy one does until its answers are in (see busy()).
    this.worker.unref();
  }

  /** Refs the thread while bytes or digests are outstanding, unrefs it once nothing is. */
  private busy(): void {
    // A stopped thread stays ref'd until it has exited (see stop()), whatever answers still come in.
    if (this.dead) return;
    const want = this.behind > 0 || this.digests.size > 0;
    if (want === this.reffed) return;
    this.reffed = want;
    if (want) this.worker.ref();
    else this.worker.unref();
  }

  newId(): number {
    this.open++;
    if (this.idle) {
      clearTimeout(this.idle);
      this.idle = undefined;
    }
    return this.nextId++;
  }

  /** A hash was digested or dropped: once none is open or outstanding for THREAD_IDLE_MS, the thread stops. */
  closed(): void {
    this.open--;
    this.idleCheck();
  }

  private idleCheck(): void {
    if (this.dead || this.idle || this.open > 0 || this.behind > 0 || this.digests.size > 0) return;
    this.idle = setTimeout(() => {
      this.idle = undefined;
      if (!this.dead && this.open === 0 && this.behind === 0 && this.digests.size === 0) void this.stop();
    }, THREAD_IDLE_MS);
    this.idle.unref();
  }

  update(id: number, chunks: readonly Buffer[], givenUp: boolean): void | Promise<void> {
    if (this.dead) return;
    const moved: ArrayBuffer[] = [];
    let n = 0;
    for (const c of chunks) {
      if (c.length === 0) continue;
      n += c.length;
      moved.push(givenUp && ownsItsMemory(c) ? (c.buffer as ArrayBuffer) : copyOf(c));
    }
    if (n === 0) return;
    try {
      this.worker.postMessage({ op: 'update', id, buffers: moved }, moved);
    } catch {
      // An ArrayBuffer that cannot be moved (pinned by native code): nothing was moved, so send copies.
      const copies = chunks.filter((c) => c.length > 0).map(copyOf);
      this.worker.postMessage({ op: 'update', id, buffers: copies }, copies);
    }
    this.behind += n;
    this.busy();
    if (this.behind > MAX_BEHIND) return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  digest(id: number): Promise<string> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise<string>((resolve, reject) => {
      this.digests.set(id, { resolve, reject });
      this.worker.postMessage({ op: 'digest', id });
      this.busy();
    });
  }

  drop(id: number): void {
    if (!this.dead) this.worker.postMessage({ op: 'drop', id });
  }

  stop(): Promise<number> {
    // Dead from now on (its hashes are lost), not only once its 'exit' event comes; and ref'd until it has
    // exited, else a process with nothing else to do could end while this is pending.
    this.die(new Error('the hashing thread was stopped'));
    this.reffed = true;
    this.worker.ref();
    return this.worker.terminate();
  }

  private receive(m: ThreadReply): void {
    if (m.op === 'ack') {
      this.behind -= m.n;
      if (this.behind <= MAX_BEHIND / 2) this.wake();
    } else {
      const d = this.digests.get(m.id);
      this.digests.delete(m.id);
      d?.resolve(m.hex);
    }
    this.busy();
    this.idleCheck();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }

  private die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    if (this.idle) clearTimeout(this.idle);
    if (thread === this) thread = undefined;
    for (const d of this.digests.values()) d.reject(e);
    this.digests.clear();
    this.wake();
  }
}

function copyOf(c: Buffer): ArrayBuffer {
  return c.buffer.slice(c.byteOffset, c.byteOffset + c.byteLength) as ArrayBuffer;
}

/** This process's hashing thread, started with the first upload that needs it. */
let thread: HashThread | undefined;

class ThreadHash implements UploadHash {
  private readonly id: number;
  private done = false;

  constructor(private readonly t: HashThread) {
    this.id = t.newId();
  }

  update(chunks: readonly Buffer[], givenUp: boolean): void | Promise<void> {
    if (!this.done) return this.t.update(this.id, chunks, givenUp);
  }

  digest(): Promise<string> {
    if (this.done) return Promise.reject(new Error('the hash was already finished'));
    this.done = true;
    const hex = this.t.digest(this.id);
    this.t.closed();
    return hex;
  }

  drop(): void {
    if (this.done) return;
    this.done = true;
    this.t.drop(this.id);
    this.t.closed();
  }
}

class InlineHash implements UploadHash {
  private readonly h: Hash = createHash('sha256');

  update(chunks: readonly Buffer[], givenUp: boolean): void {
    for (const c of chunks) {
      this.h.update(c);
      if (givenUp) releaseChunk(c);
    }
  }

  digest(): Promise<string> {
    return Promise.resolve(this.h.digest('hex'));
  }

  drop(): void {}
}

/**
 * A running sha256 for an upload expected to bring `length` bytes (undefined: not announced), while `writing`
 * uploads (this one included) are being written in this process. Hashed on the thread unless the upload is
 * small, the process is busy with other uploads, or `BERTH_HASH_THREAD=0`.
 */
export function newUploadHash(length?: number, writing = 1): UploadHash {
  if ((length !== undefined && length < THREAD_MIN) || writing > THREAD_MAX_UPLOADS || process.env.BERTH_HASH_THREAD === '0') return new InlineHash();
  try {
    thread ??= new HashThread();
  } catch {
    return new InlineHash();
  }
  return new ThreadHash(thread);
}

/** Whether this process has a hashing thread now (for tests and diagnostics). */
export function hashThreadRunning(): boolean {
  return thread !== undefined;
}

/** Stops the hashing thread (its hashes are lost; the next upload starts another): for shutdown and tests. */
export async function stopHashThread(): Promise<void> {
  const t = thread;
  thread = undefined;
  await t?.stop();
}
