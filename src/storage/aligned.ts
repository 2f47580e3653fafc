/** Page-aligned slabs for O_DIRECT, cut from one lazily created WebAssembly memory. */
const Wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly;

export class AlignedSlabs {
  #free: Buffer[] | undefined;
  constructor(
    readonly slabSize: number,
    readonly count: number,
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
    return this.#pool().pop();
  }
  give(b: Buffer): void {
    this.#pool().push(b);
  }
}
