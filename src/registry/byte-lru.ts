/**
 * A least-recently-used map bounded by the total cost of its values: bytes for content addressed by digest
 * (`sizeOf` = length), or entries (`sizeOf` = 1).
 */
export class ByteLru<V> {
  private readonly map = new Map<string, V>();
  private bytes = 0;

  /**
   * @param limit total cost kept
   * @param sizeOf the cost of a value (its size in bytes, or 1 to bound the number of entries)
   * @param maxEntry values costing more than this are not kept (default: the whole limit)
   * @param onDrop called with each value that leaves the map (evicted, deleted or replaced by another value)
   */
  constructor(
    private readonly limit: number,
    private readonly sizeOf: (v: V) => number,
    private readonly maxEntry = limit,
    private readonly onDrop?: (v: V) => void,
  ) {}

  get(key: string): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  /** Reads without refreshing the entry's recency. */
  peek(key: string): V | undefined {
    return this.map.get(key);
  }

  /** Stores `v` as the most recent entry (replacing any value under `key`), evicting the least recent. */
  set(key: string, v: V): void {
    const size = this.sizeOf(v);
    if (size > this.maxEntry) return;
    if (this.map.get(key) === v) {
      // The same value again: refreshed, not dropped.
      this.map.delete(key);
      this.bytes -= size;
    } else this.delete(key);
    this.map.set(key, v);
    this.bytes += size;
    for (const [k, old] of this.map) {
      if (this.bytes <= this.limit) break;
      this.map.delete(k);
      this.bytes -= this.sizeOf(old);
      this.onDrop?.(old);
    }
  }

  delete(key: string): void {
    const old = this.map.get(key);
    if (old === undefined) return;
    this.map.delete(key);
    this.bytes -= this.sizeOf(old);
    this.onDrop?.(old);
  }

  get size(): number {
    return this.map.size;
  }
}
