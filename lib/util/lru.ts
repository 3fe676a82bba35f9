// A byte-bounded LRU map: caches in the reader are limited by memory, not entry count,
// so memory stays bounded whatever the repository holds.

export class ByteLru<K, V> {
  private readonly map = new Map<K, { value: V; bytes: number }>();
  private total = 0;

  constructor(private readonly maxBytes: number) {}

  get bytes(): number {
    return this.total;
  }

  get(key: K): V | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    this.map.set(key, hit);
    return hit.value;
  }

  set(key: K, value: V, bytes: number): void {
    const old = this.map.get(key);
    if (old) {
      this.total -= old.bytes;
      this.map.delete(key);
    }
    if (bytes > this.maxBytes) return;
    this.map.set(key, { value, bytes });
    this.total += bytes;
    while (this.total > this.maxBytes) {
      const [k, v] = this.map.entries().next().value as [K, { value: V; bytes: number }];
      this.map.delete(k);
      this.total -= v.bytes;
    }
  }

  clear(): void {
    this.map.clear();
    this.total = 0;
  }
}
