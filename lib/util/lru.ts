// A byte-bounded LRU map: caches in the reader are limited by memory, not entry count,
// so memory stays bounded whatever the repository holds.
//
// Recency is kept in a doubly linked list beside the Map, so get, set and eviction are
// O(1). (Evicting through `map.keys().next()` after delete-and-reinsert is not: a JS Map
// keeps deleted slots until it rehashes, and the iterator walks over all of them, which
// made a full cache cost O(entries) per eviction.)

interface Slot<K, V> {
  key: K;
  value: V;
  bytes: number;
  prev: Slot<K, V> | undefined;
  next: Slot<K, V> | undefined;
}

export class ByteLru<K, V> {
  private readonly map = new Map<K, Slot<K, V>>();
  private total = 0;
  /** Least recently used end. */
  private head: Slot<K, V> | undefined;
  /** Most recently used end. */
  private tail: Slot<K, V> | undefined;

  /** `onEvict` is called with each value pushed out by set() (not for delete or clear). */
  constructor(
    private readonly maxBytes: number,
    private readonly onEvict?: (value: V, key: K) => void,
  ) {}

  get bytes(): number {
    return this.total;
  }

  get size(): number {
    return this.map.size;
  }

  private unlink(s: Slot<K, V>): void {
    if (s.prev) s.prev.next = s.next;
    else this.head = s.next;
    if (s.next) s.next.prev = s.prev;
    else this.tail = s.prev;
    s.prev = s.next = undefined;
  }

  private append(s: Slot<K, V>): void {
    s.prev = this.tail;
    s.next = undefined;
    if (this.tail) this.tail.next = s;
    else this.head = s;
    this.tail = s;
  }

  /** Whether `key` is held, without making it the most recent. */
  has(key: K): boolean {
    return this.map.has(key);
  }

  get(key: K): V | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    if (hit !== this.tail) {
      this.unlink(hit);
      this.append(hit);
    }
    return hit.value;
  }

  set(key: K, value: V, bytes: number): void {
    const old = this.map.get(key);
    if (old) {
      this.total -= old.bytes;
      this.unlink(old);
      this.map.delete(key);
    }
    if (bytes > this.maxBytes) return;
    const slot: Slot<K, V> = { key, value, bytes, prev: undefined, next: undefined };
    this.map.set(key, slot);
    this.append(slot);
    this.total += bytes;
    while (this.total > this.maxBytes && this.head) {
      const lru = this.head;
      this.unlink(lru);
      this.map.delete(lru.key);
      this.total -= lru.bytes;
      this.onEvict?.(lru.value, lru.key);
    }
  }

  delete(key: K): boolean {
    const s = this.map.get(key);
    if (!s) return false;
    this.unlink(s);
    this.map.delete(key);
    this.total -= s.bytes;
    return true;
  }

  clear(): void {
    this.map.clear();
    this.head = this.tail = undefined;
    this.total = 0;
  }
}
