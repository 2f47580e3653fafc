/**
 * Page-aligned slabs for O_DIRECT, cut from one lazily created WebAssembly memory.
 *
 * A WebAssembly memory cannot shrink, and every slab it has handed out stays resident. Kept, a burst of
 * concurrent uploads would leave its slabs resident for the life of the process, on top of whatever memory the
 * next load needs (bench: 32 concurrent pushes, then manifest GETs at 64 connections, summed peak RSS 214 MiB
 * with the slabs kept). So once every slab has been back for `idleMs` the pool lets go of its memory and cuts a
 * new one on the next `take()`. Letting go takes a full GC, run right away (a WebAssembly memory cannot be
 * detached): left to V8, a dropped memory stayed resident beside the next burst's (three rounds of 32
 * concurrent pushes: +8 MiB per round).
 */
import { collectGarbage } from './release.ts';

const Wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly;

export class AlignedSlabs {
  #free: Buffer[] | undefined;
  #idle: NodeJS.Timeout | undefined;
  constructor(
    readonly slabSize: number,
    readonly count: number,
    readonly idleMs = 2000,
    /** While this says the pool's users are at work, idle slabs are kept (checked again every `idleMs`). */
    readonly busy: () => boolean = () => false,
  ) {}
  #pool(): Buffer[] {
    if (!this.#free) {
      try {
        const mem = Buffer.from(new Wasm.Memory({ initial: (this.slabSize * this.count) / 65536 }).buffer);
        this.#free = Array.from({ length: this.count }, (_, i) => mem.subarray(i * this.slabSize, (i + 1) * this.slabSize));
      } catch {
        this.#free = [];
      }
    }
    return this.#free;
  }
  available(): number {
    return this.#pool().length;
  }
  take(): Buffer | undefined {
    if (this.#idle) {
      clearTimeout(this.#idle);
      this.#idle = undefined;
    }
    return this.#pool().pop();
  }
  give(b: Buffer): void {
    const free = this.#pool();
    free.push(b);
    if (free.length === this.count && !this.#idle) this.#arm();
  }
  #arm(): void {
    this.#idle = setTimeout(() => {
      this.#idle = undefined;
      if (this.#free?.length !== this.count) return;
      if (this.busy()) return this.#arm();
      this.#free = undefined;
      // Outside this callback's frame, so that nothing on the stack still holds a slab; not unref'd, as an
      // unref'd immediate waits for the next I/O event of a process that may have gone quiet.
      setImmediate(collectGarbage);
    }, this.idleMs);
    this.#idle.unref();
  }
}
