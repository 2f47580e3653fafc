/** A least-recently-used map bounded by the total byte size of its values (for content addressed by digest). */
export class ByteLru<V> {
  private readonly map = new Map<string, V>();
  private bytes = 0;

  /**
   * @param limit total bytes kept
   * @param sizeOf the size of a value in bytes
   * @param maxEntry values larger than this are not kept (default: the whole limit)
   */
  constructor(
    private readonly limit: number,
    private readonly sizeOf: (v: V) => number,
    private readonly maxEntry = limit,
  ) {}

  get(key: string): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  set(key: string, v: V): void {
    const size = this.sizeOf(v);
    if (size > this.maxEntry || this.map.has(key)) return;
    this.map.set(key, v);
    this.bytes += size;
    for (const [k, old] of this.map) {
      if (this.bytes <= this.limit) break;
      this.map.delete(k);
      this.bytes -= this.sizeOf(old);
    }
  }
}
