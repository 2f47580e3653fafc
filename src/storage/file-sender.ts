/**
 * Sends a byte range of a file into a Writable (an HTTP response) with pooled, reused buffers.
 * Node has no sendfile; fs.createReadStream allocates a new buffer for every read. Reading into a few
 * reused 1 MiB buffers, two reads at a time overlapping the socket write before them, roughly doubles
 * loopback pull throughput and keeps memory flat.
 *
 * The buffers are the backpressure: a buffer is read into again only once the socket has taken all of it
 * (its write callback), so a transfer holds at most PER_TRANSFER MiB however slow the client. Waiting for the
 * response's `drain` as well, as this did before, meant waiting for its 16 KiB high-water mark, which a 1 MiB
 * write always passes: every read waited for the previous write to be flushed, and nothing overlapped
 * (`curl` pulls of 1 GiB from one process: 705–769 MB/s with it, 870–1,470 without; distribution 894–1,456).
 */
import { close, read } from 'node:fs';
import type { Writable } from 'node:stream';

const BUFFER_SIZE = 1024 * 1024;
const PER_TRANSFER = 3;
const POOL_MAX = 12;
/**
 * Reads in flight at once for one transfer (positional, so they may finish in any order; writes follow file
 * order). Two instead of one: `curl` pulls of 1 GiB, 10 alternating rounds, 1,214 → 1,361 MB/s; three did no
 * better (1,364).
 */
const MAX_READS = 2;
const pool: Buffer[] = [];
let allocated = 0;

/**
 * Memory for the pooled buffers, page-aligned. Where a buffer starts within its page matters: the kernel copies
 * a file's page-cache pages into it about 3.5× slower (2.1–2.4 against 7.4–8.7 GB/s here, `readSync` of 1 MiB
 * into one buffer at different offsets) when it starts 8–24 bytes past a page boundary, and that is exactly where
 * glibc puts a 1 MiB `Buffer.allocUnsafeSlow` (an mmap()ed chunk after its 16-byte header). A process whose
 * buffers came from the heap instead was fast, which made pulls differ by 2× between server processes. A
 * WebAssembly memory is page-aligned by construction; touched pages count as resident, the rest only reserve
 * address space.
 */
let arena: Buffer | undefined | null;
/** The WebAssembly global (Node has it; the project's TypeScript libs do not declare it). */
const Wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly;
const ALIGN_SLACK = 64;

/** Pool buffer number `allocated`: it does not start 8–24 bytes into a page (exact when page-aligned memory is available). */
function alignedBuffer(): Buffer {
  if (arena === undefined) {
    try {
      arena = Buffer.from(new Wasm.Memory({ initial: (POOL_MAX * BUFFER_SIZE) / 65536 }).buffer);
    } catch {
      // No WebAssembly (--jitless): shift an mmap()ed chunk's 16-byte offset to 64.
      arena = null;
    }
  }
  if (arena) return arena.subarray(allocated * BUFFER_SIZE, (allocated + 1) * BUFFER_SIZE);
  return shiftedBuffer();
}

/** A buffer of its own, moved off an mmap()ed chunk's 16-byte offset (to 64). */
function shiftedBuffer(): Buffer {
  return Buffer.allocUnsafeSlow(BUFFER_SIZE + ALIGN_SLACK).subarray(ALIGN_SLACK - 16, ALIGN_SLACK - 16 + BUFFER_SIZE);
}

function take(): Buffer | undefined {
  const b = pool.pop();
  if (b) return b;
  if (allocated >= POOL_MAX) return undefined;
  const fresh = alignedBuffer();
  allocated++;
  return fresh;
}

function give(b: Buffer): void {
  // Every pooled buffer has its own slot in the arena and comes back once, so the pool never overflows.
  pool.push(b);
}

/**
 * Writes bytes `[start, end]` (inclusive) of the open descriptor `fd` to `dest`, then closes `fd` (always).
 * Resolves when everything was handed to `dest`; rejects on read errors or when `dest` closes early.
 * Does not end `dest`. `readAt` is `fs.read` (a test may delay some reads to make them finish out of order).
 */
export function sendFileRange(fd: number, start: number, end: number, dest: Writable, readAt: typeof read = read): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const owned: Buffer[] = [];
    const free: Buffer[] = [];
    for (let i = 0; i < PER_TRANSFER; i++) {
      const b = take();
      if (!b) break;
      owned.push(b);
      free.push(b);
    }
    if (owned.length === 0) {
      // Pool exhausted: this transfer gets one buffer of its own.
      const b = shiftedBuffer();
      free.push(b);
    }
    /** Next byte to read; next byte to write (reads may finish out of order, writes go in file order). */
    let pos = start;
    let next = start;
    let reading = 0;
    let inflight = 0;
    let finished = false;
    let destClosed = false;
    let fdClosed = false;
    let released = false;
    /** Reads that finished before the one ahead of them, by file position. */
    const ready = new Map<number, { b: Buffer; n: number }>();
    /**
     * After the end: the descriptor is closed once no read is pending on it (its number could be reused by
     * another open meanwhile), and the buffers go back to the pool once no read or write holds them (a write
     * left pending on a closed destination is never sent).
     */
    const cleanUp = (): void => {
      if (!finished || reading > 0) return;
      if (!fdClosed) {
        fdClosed = true;
        close(fd, () => undefined);
      }
      if (!released && (inflight === 0 || destClosed)) {
        released = true;
        for (const b of owned) give(b);
      }
    };
    const finish = (err?: unknown): void => {
      if (finished) return;
      finished = true;
      cleanUp();
      if (err) reject(err);
      else resolve();
    };
    const onClose = (): void => {
      destClosed = true;
      if (next <= end) finish(Object.assign(new Error('destination closed before the transfer completed'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
      cleanUp();
    };
    /** Writes, in order, every finished read that is next in the file. */
    function flush(): void {
      for (let r = ready.get(next); r && !finished; r = ready.get(next)) {
        ready.delete(next);
        next += r.n;
        inflight++;
        const b = r.b;
        dest.write(r.n === b.length ? b : b.subarray(0, r.n), () => {
          inflight--;
          free.push(b);
          if (finished) cleanUp();
          else pump();
        });
      }
      if (next > end && inflight === 0 && reading === 0) finish();
    }
    /** Starts a read into every free buffer (up to MAX_READS at once), each at its own file position. */
    function pump(): void {
      while (!finished && reading < MAX_READS && free.length > 0 && pos <= end) {
        const b = free.pop()!;
        const at = pos;
        const want = Math.min(b.length, end - pos + 1);
        pos += want;
        reading++;
        readAt(fd, b, 0, want, at, (err, n) => {
          reading--;
          if (finished) return cleanUp();
          if (err) return finish(err);
          if (n !== want) return finish(new Error('file shorter than expected'));
          ready.set(at, { b, n });
          flush();
          pump();
        });
      }
      if (!finished && pos > end) flush();
    }
    dest.once('close', onClose);
    pump();
  });
}
