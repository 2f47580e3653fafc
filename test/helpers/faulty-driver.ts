/**
 * A fault-injecting StorageDriver wrapper for reliability tests (test-only). Over any driver it makes calls
 * fail at random (EIO, ENOSPC, ETIMEDOUT or a plain Error), fail after their effect happened (a lost
 * acknowledgement), break streams part-way (readers, writers, sendTo), or hang. A hung operation never settles
 * until the faults are switched off; then it rejects, so nothing is left pending. A seeded PRNG makes a run
 * repeatable (`FAULT_SEED` overrides the seed). Optionally a simulated capacity makes writes fail with ENOSPC
 * once the bytes in use reach it (a full disk without a small filesystem).
 */
import { Readable, Writable } from 'node:stream';
import type { FileWriter, SendOptions, StorageDriver } from '../../src/storage/driver.ts';
import { prng } from './prng.ts';

export { prng };

export const FAULT_OPS = ['getContent', 'putContent', 'reader', 'writer', 'stat', 'list', 'move', 'delete', 'sendTo'] as const;
export type FaultOp = (typeof FAULT_OPS)[number];
export const FAULT_KINDS = ['EIO', 'ENOSPC', 'ETIMEDOUT', 'Error', 'hang'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface FaultPlan {
  /** Probability (0..1) that one call of each operation gets a fault. */
  rates: Partial<Record<FaultOp, number>>;
  /** Relative weights of the fault kinds (default: the errors 1 each, hang 0). */
  kinds?: Partial<Record<FaultKind, number>>;
  /**
   * For operations with an effect (putContent, move, delete, a writer's commit): the probability that an error
   * is reported after the inner operation succeeded, as when an acknowledgement is lost.
   */
  after?: number;
  /** Where writer faults strike (default: at random among the three). */
  writerAt?: 'open' | 'stream' | 'commit';
}

/** A simulated disk: writes fail with ENOSPC once `used()` plus the bytes in flight would exceed `bytes`. */
export interface Capacity {
  bytes: number;
  /** Bytes in use now (e.g. a walk of the storage root). */
  used: () => number;
}

/** The seed from `FAULT_SEED`, else a random one; printed so a failing run can be repeated. */
export function faultSeed(label: string): number {
  const env = process.env.FAULT_SEED;
  const seed = env !== undefined && env !== '' ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  console.log(`${label}: fault seed ${seed} (repeat with FAULT_SEED=${seed})`);
  return seed;
}

/** An injected error; `injected` lets a test tell it from a genuine failure. */
export class InjectedFault extends Error {
  readonly injected = true;
  readonly code: string | undefined;
  constructor(kind: Exclude<FaultKind, 'hang'> | 'released', op: string, n: number) {
    super(kind === 'released' ? `injected hang in ${op} released (fault #${n})` : `injected ${kind} in ${op} (fault #${n})`);
    this.name = 'InjectedFault';
    this.code = kind === 'Error' ? undefined : kind === 'released' ? 'EIO' : kind;
    if (kind === 'Error') this.name = 'Error';
  }
}

type Pending = { release: (e: Error) => void };

export class FaultController {
  readonly seed: number;
  private readonly rand: () => number;
  private plan: FaultPlan = { rates: {} };
  private active = false;
  private readonly hanging = new Set<Pending>();
  private capacity: Capacity | undefined;
  /** Bytes written by open writers and not yet seen by `capacity.used()` (they are, once committed). */
  private inflight = 0;
  private n = 0;
  /** Faults injected, by operation and kind (`after` marks errors reported after the effect). */
  readonly counts: Record<string, Record<string, number>> = {};

  constructor(seed: number) {
    this.seed = seed;
    this.rand = prng(seed);
  }

  /** Switches random faults on (with a new plan, if given). */
  on(plan?: FaultPlan): void {
    if (plan) this.plan = plan;
    this.active = true;
  }

  /** Switches random faults off and releases every hung operation (they reject). */
  off(): void {
    this.active = false;
    const hung = [...this.hanging];
    this.hanging.clear();
    for (const h of hung) h.release(new InjectedFault('released', 'hang', ++this.n));
  }

  get isOn(): boolean {
    return this.active;
  }

  /** Operations hanging right now. */
  get hangingNow(): number {
    return this.hanging.size;
  }

  setCapacity(c: Capacity | undefined): void {
    this.capacity = c;
    this.inflight = 0;
  }

  /** Total faults injected. */
  total(): number {
    let t = 0;
    for (const k of Object.values(this.counts)) for (const v of Object.values(k)) t += v;
    return t;
  }

  /** Counts per kind, over all operations. */
  byKind(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const k of Object.values(this.counts)) for (const [kind, v] of Object.entries(k)) out[kind] = (out[kind] ?? 0) + v;
    return out;
  }

  random(): number {
    return this.rand();
  }

  private count(op: string, kind: string): number {
    const c = (this.counts[op] ??= {});
    c[kind] = (c[kind] ?? 0) + 1;
    return ++this.n;
  }

  /** Decides whether this call of `op` gets a fault, and which. */
  roll(op: FaultOp): FaultKind | undefined {
    if (!this.active) return undefined;
    const rate = this.plan.rates[op] ?? 0;
    if (rate <= 0 || this.rand() >= rate) return undefined;
    const weights = this.plan.kinds ?? { EIO: 1, ENOSPC: 1, ETIMEDOUT: 1, Error: 1 };
    const entries = FAULT_KINDS.map((k) => [k, weights[k] ?? 0] as const).filter(([, w]) => w > 0);
    const total = entries.reduce((s, [, w]) => s + w, 0);
    let x = this.rand() * total;
    for (const [k, w] of entries) {
      if ((x -= w) < 0) return k;
    }
    return entries[entries.length - 1]?.[0];
  }

  get writerAt(): FaultPlan['writerAt'] {
    return this.plan.writerAt;
  }

  /** Whether an error on an operation with an effect is reported after the effect. */
  rollAfter(): boolean {
    return this.rand() < (this.plan.after ?? 0);
  }

  error(op: string, kind: Exclude<FaultKind, 'hang'>, tag = kind as string): InjectedFault {
    return new InjectedFault(kind, op, this.count(op, tag));
  }

  /** A promise that settles only when the faults are switched off, then rejects. */
  hang(op: string): Promise<never> {
    this.count(op, 'hang');
    return new Promise<never>((_ok, fail) => {
      const p: Pending = { release: fail };
      this.hanging.add(p);
      // Switched off meanwhile (between the roll and here): release at once.
      if (!this.active) {
        this.hanging.delete(p);
        fail(new InjectedFault('released', op, ++this.n));
      }
    });
  }

  /** Throws or hangs for a fault rolled for `op` (before the operation). */
  async inject(op: FaultOp, kind: FaultKind): Promise<never> {
    if (kind === 'hang') return this.hang(op);
    throw this.error(op, kind);
  }

  /** Bytes that may still be written before the simulated disk is full (Infinity without a capacity). */
  room(): number {
    if (!this.capacity) return Infinity;
    return this.capacity.bytes - this.capacity.used() - this.inflight;
  }

  /** Accounts bytes written by a writer that `used()` may not see yet; `settle` when they are visible. */
  reserve(n: number): void {
    if (this.capacity) this.inflight += n;
  }

  settle(n: number): void {
    if (this.capacity) this.inflight = Math.max(0, this.inflight - n);
  }

  hasCapacity(): boolean {
    return this.capacity !== undefined;
  }

  noSpace(op: string): InjectedFault {
    return this.error(op, 'ENOSPC', 'ENOSPC(full)');
  }

  /** Wraps a driver: every call consults this controller first. */
  wrap(inner: StorageDriver): StorageDriver {
    return faultyDriver(inner, this);
  }
}

function faultyDriver(inner: StorageDriver, f: FaultController): StorageDriver {
  /** Runs an operation with an effect: a fault before it, or (sometimes) an error after it succeeded. */
  async function effect<T>(op: FaultOp, run: () => Promise<T>): Promise<T> {
    const kind = f.roll(op);
    if (kind === undefined) return run();
    if (kind !== 'hang' && f.rollAfter()) {
      await run();
      throw f.error(op, kind, `${kind}(after)`);
    }
    return f.inject(op, kind);
  }

  async function pure<T>(op: FaultOp, run: () => Promise<T>): Promise<T> {
    const kind = f.roll(op);
    if (kind !== undefined) await f.inject(op, kind);
    return run();
  }

  const driver: StorageDriver = {
    name: inner.name,
    getContent: (p, o) => pure('getContent', () => inner.getContent(p, o)),
    putContent: (p, d, o) =>
      effect('putContent', async () => {
        if (f.hasCapacity() && d.byteLength > 0 && f.room() < d.byteLength) throw f.noSpace('putContent');
        return inner.putContent(p, d, o);
      }),
    stat: (p, o) => pure('stat', () => inner.stat(p, o)),
    list: (p, o) => pure('list', () => inner.list(p, o)),
    move: (s, d, o) => effect('move', () => inner.move(s, d, o)),
    delete: (p, o) => effect('delete', () => inner.delete(p, o)),
    redirectUrl: (p, m) => inner.redirectUrl(p, m),
    ...(inner.removeEmptyDir ? { removeEmptyDir: (p: string) => inner.removeEmptyDir!(p) } : {}),

    async reader(path, offset, o) {
      const kind = f.roll('reader');
      // Half of the reader faults happen at open, half part-way through the stream.
      if (kind !== undefined && f.random() < 0.5) await f.inject('reader', kind);
      const r = await inner.reader(path, offset, o);
      if (kind === undefined) return r;
      const after = Math.floor(f.random() * 256 * 1024);
      return Readable.from(breakAfter(r, after, 'reader', kind));
    },

    async writer(path, o): Promise<FileWriter> {
      const kind = f.roll('writer');
      // A third of the writer faults happen at open, a third in the stream, a third at commit.
      const where = kind === undefined ? undefined : (f.writerAt ?? (['open', 'stream', 'commit'] as const)[Math.floor(f.random() * 3)]!);
      if (kind !== undefined && where === 'open') await f.inject('writer', kind);
      const w = await inner.writer(path, o);
      return faultyWriter(w, f, where === 'stream' ? kind : undefined, where === 'commit' ? kind : undefined);
    },
  };

  async function* breakAfter(r: Readable, limit: number, op: FaultOp, kind: FaultKind): AsyncGenerator<Buffer> {
    let sent = 0;
    for await (const c of r) {
      const chunk = c as Buffer;
      if (sent + chunk.length > limit) {
        if (limit > sent) yield chunk.subarray(0, limit - sent);
        await f.inject(op, kind);
      }
      sent += chunk.length;
      yield chunk;
    }
    // The stream ended before the fault point: fail at the end instead, so every rolled fault happens.
    await f.inject(op, kind);
  }

  const sendTo = inner.sendTo?.bind(inner);
  if (sendTo) {
    driver.sendTo = async (path: string, dest: Writable, o: SendOptions): Promise<void> => {
      const kind = f.roll('sendTo');
      if (kind === undefined) return sendTo(path, dest, o);
      if (f.random() < 0.5) return f.inject('sendTo', kind);
      // Part-way: send a prefix (headers go out at open), then fail.
      const cut = Math.min(o.end, o.start + Math.floor(f.random() * Math.max(1, o.end - o.start)));
      await sendTo(path, dest, { ...o, end: cut });
      return f.inject('sendTo', kind);
    };
  }
  return driver;
}

/** A writer whose stream may break after some bytes (or hang), and whose commit may fail or hang. */
function faultyWriter(w: FileWriter, f: FaultController, streamFault: FaultKind | undefined, commitFault: FaultKind | undefined): FileWriter {
  const breakAt = streamFault === undefined ? Infinity : Math.floor(f.random() * 256 * 1024);
  let passed = 0;
  let reserved = 0;
  let innerError: Error | undefined;
  // Errors of the inner stream reach us through write callbacks; the listener keeps them from being uncaught.
  w.stream.on('error', (e: Error) => {
    innerError ??= e;
  });
  const forward = (chunk: Buffer): Promise<void> =>
    new Promise<void>((ok, fail) => {
      if (innerError) return fail(innerError);
      w.stream.write(chunk, (e) => (e ? fail(e) : ok()));
    });
  const stream = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      void (async () => {
        let data = chunk;
        let fault: Error | FaultKind | undefined;
        if (passed + data.length > breakAt) {
          data = data.subarray(0, breakAt - passed);
          fault = streamFault;
        }
        const room = f.room();
        if (data.length > room) {
          data = data.subarray(0, Math.max(0, Math.floor(room)));
          fault = f.noSpace('writer');
        }
        const n = data.length;
        if (n > 0) {
          f.reserve(n);
          reserved += n;
          // Counted before: an inner writer given the body (releaseWritten) may free the chunk once written.
          await forward(data);
          passed += n;
        }
        if (fault === 'hang') await f.hang('writer');
        if (fault instanceof Error) throw fault;
        if (fault !== undefined && fault !== 'hang') throw f.error('writer', fault);
      })().then(() => cb(), (e: Error) => cb(e));
    },
    final(cb) {
      if (innerError) return cb(innerError);
      // The inner writer may fail in its own final(): the end callback carries that error.
      w.stream.end((e?: Error | null) => cb(e ?? innerError));
    },
  });
  const release = (): void => {
    f.settle(reserved);
    reserved = 0;
  };
  return {
    stream,
    size: () => w.size(),
    async commit() {
      try {
        if (commitFault === undefined) return await w.commit();
        if (commitFault === 'hang') {
          await f.hang('writer.commit');
        }
        if (commitFault !== 'hang' && f.rollAfter()) {
          await w.commit();
          throw f.error('writer', commitFault, `${commitFault}(commit,after)`);
        }
        throw f.error('writer', commitFault === 'hang' ? 'EIO' : commitFault, `${commitFault}(commit)`);
      } finally {
        release();
      }
    },
    async cancel() {
      release();
      await w.cancel();
    },
    async close() {
      release();
      await w.close();
    },
    async discard() {
      release();
      await w.discard();
    },
  };
}
