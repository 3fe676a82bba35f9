// The nodes the kernel holds, in as few bytes as they can take. The kernel keeps an inode
// (and so a reference to its node id) for every name it looked up until it sends forget:
// an `ls -l` of a directory of 1,000,000 entries holds 1,000,000 of them. A full node
// (entry, attributes, path: ~1.5 KiB of objects) for each made the mount grow to gigabytes;
// everything in it follows from (snapshot, path) through the immutable trees, so that is
// all kept here, and the VFS rebuilds the node when it needs one it no longer caches.
//
// Layout: records in parallel typed arrays (node id as two 32-bit halves, lookup count,
// snapshot number, path offset and length), found through an open-addressing index
// (linear probing, deletion by backward shift, no tombstones); path bytes in one arena
// compacted when half of it is dead. About 70 bytes per node plus the path: no objects
// per node, nothing for the garbage collector to walk.

import { SnapfsError } from '../errors.js';

const MIN_RECORDS = 1024;
const MIN_ARENA = 64 * 1024;
/** Counts stick here instead of wrapping: such a node is then simply never released. */
const MAX_COUNT = 0xffffffff;
const MAX_ARENA = 0xffffffff;

export interface PinnedPath {
  snap: number;
  /** A copy: the table's own bytes move when it compacts. */
  path: Buffer;
}

export class PinTable {
  private records = 0;
  private lo: Uint32Array = new Uint32Array(MIN_RECORDS);
  private hi: Uint32Array = new Uint32Array(MIN_RECORDS);
  private counts: Uint32Array = new Uint32Array(MIN_RECORDS);
  private snaps: Uint32Array = new Uint32Array(MIN_RECORDS);
  private offs: Uint32Array = new Uint32Array(MIN_RECORDS);
  private lens: Uint32Array = new Uint32Array(MIN_RECORDS);
  /** Slot -> record number + 1 (0: empty); at most half full. */
  private index: Int32Array = new Int32Array(MIN_RECORDS * 2);
  private arena: Buffer = Buffer.allocUnsafeSlow(MIN_ARENA);
  private arenaUsed = 0;
  private arenaDead = 0;

  get size(): number {
    return this.records;
  }

  /** Bytes the table's arrays and arena take (for tests and the memory log line). */
  get bytes(): number {
    return this.lo.length * 24 + this.index.length * 4 + this.arena.length;
  }

  has(id: bigint): boolean {
    return this.find(lo32(id), hi32(id)) >= 0;
  }

  /** The snapshot number and path of a held node, or undefined. */
  get(id: bigint): PinnedPath | undefined {
    const r = this.find(lo32(id), hi32(id));
    if (r < 0) return undefined;
    const off = this.offs[r]!;
    return { snap: this.snaps[r]!, path: Buffer.from(this.arena.subarray(off, off + this.lens[r]!)) };
  }

  /**
   * Whether held node `id` was recorded as `path` of snapshot number `snap` (compared in
   * place, nothing allocated); undefined when `id` is not held.
   */
  holdsAs(id: bigint, snap: number | undefined, path: [Buffer, Buffer]): boolean | undefined {
    const r = this.find(lo32(id), hi32(id));
    if (r < 0) return undefined;
    if (snap !== this.snaps[r] || this.lens[r] !== pathLength(path)) return false;
    const off = this.offs[r]!;
    const [parent, name] = path;
    if (!parent.length) return this.arena.subarray(off, off + name.length).equals(name);
    return this.arena[off + parent.length] === 0x2f &&
      this.arena.subarray(off, off + parent.length).equals(parent) &&
      this.arena.subarray(off + parent.length + 1, off + this.lens[r]!).equals(name);
  }

  /**
   * Adds `n` references to `id`, recording (snap, path) when it is new; a path given as
   * [parent, name] is stored as parent/name (name alone under an empty parent).
   */
  add(id: bigint, snap: number, path: Buffer | [Buffer, Buffer], n = 1): void {
    const lo = lo32(id);
    const hi = hi32(id);
    const found = this.find(lo, hi);
    if (found >= 0) {
      this.counts[found] = Math.min(MAX_COUNT, this.counts[found]! + n);
      return;
    }
    if (this.records === this.lo.length) this.growRecords();
    if ((this.records + 1) * 2 > this.index.length) this.growIndex();
    const off = this.store(path);
    const r = this.records++;
    this.lo[r] = lo;
    this.hi[r] = hi;
    this.counts[r] = Math.min(MAX_COUNT, n);
    this.snaps[r] = snap;
    this.offs[r] = off;
    this.lens[r] = pathLength(path);
    let s = this.home(lo, hi);
    while (this.index[s] !== 0) s = (s + 1) & (this.index.length - 1);
    this.index[s] = r + 1;
  }

  /** Takes `n` references away; returns true when the node is no longer held. */
  release(id: bigint, n: number): boolean {
    const lo = lo32(id);
    const hi = hi32(id);
    const slot = this.slotOf(lo, hi);
    if (slot < 0) return true;
    const r = this.index[slot]! - 1;
    const c = this.counts[r]!;
    if (c === MAX_COUNT) return false;
    if (c > n) {
      this.counts[r] = c - n;
      return false;
    }
    this.remove(slot, r);
    return true;
  }

  // --- index ---------------------------------------------------------------------------

  private home(lo: number, hi: number): number {
    // Ids are hashes already; mixing both halves costs nothing and spares the small ones.
    return Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) >>> 0 & (this.index.length - 1);
  }

  private slotOf(lo: number, hi: number): number {
    const mask = this.index.length - 1;
    for (let s = this.home(lo, hi); ; s = (s + 1) & mask) {
      const v = this.index[s]!;
      if (v === 0) return -1;
      if (this.lo[v - 1] === lo && this.hi[v - 1] === hi) return s;
    }
  }

  private find(lo: number, hi: number): number {
    const s = this.slotOf(lo, hi);
    return s < 0 ? -1 : this.index[s]! - 1;
  }

  private remove(slot: number, r: number): void {
    // Backward shift: later entries of the probe run move up so no search stops early.
    const mask = this.index.length - 1;
    let hole = slot;
    for (let s = (slot + 1) & mask; this.index[s] !== 0; s = (s + 1) & mask) {
      const v = this.index[s]! - 1;
      const h = this.home(this.lo[v]!, this.hi[v]!);
      // Movable when its home is not in (hole, s], cyclically.
      const between = hole <= s ? h > hole && h <= s : h > hole || h <= s;
      if (!between) {
        this.index[hole] = this.index[s]!;
        hole = s;
      }
    }
    this.index[hole] = 0;
    this.arenaDead += this.lens[r]!;
    // Keep records dense: the last one takes the freed place.
    const last = this.records - 1;
    if (r !== last) {
      const ls = this.slotOf(this.lo[last]!, this.hi[last]!);
      this.lo[r] = this.lo[last]!;
      this.hi[r] = this.hi[last]!;
      this.counts[r] = this.counts[last]!;
      this.snaps[r] = this.snaps[last]!;
      this.offs[r] = this.offs[last]!;
      this.lens[r] = this.lens[last]!;
      this.index[ls] = r + 1;
    }
    this.records = last;
    if (this.records === 0) {
      this.arenaUsed = 0;
      this.arenaDead = 0;
    } else if (this.arenaDead > MIN_ARENA && this.arenaDead * 2 > this.arenaUsed) this.compact(this.arena.length);
    if (this.lo.length > MIN_RECORDS && this.records * 4 < this.lo.length) this.shrink();
  }

  private growIndex(): void {
    this.rebuildIndex(this.index.length * 2);
  }

  private rebuildIndex(size: number): void {
    this.index = new Int32Array(size);
    const mask = size - 1;
    for (let r = 0; r < this.records; r++) {
      let s = this.home(this.lo[r]!, this.hi[r]!);
      while (this.index[s] !== 0) s = (s + 1) & mask;
      this.index[s] = r + 1;
    }
  }

  // --- records -------------------------------------------------------------------------

  private resizeRecords(n: number): void {
    const copy = (a: Uint32Array): Uint32Array => {
      const b = new Uint32Array(n);
      b.set(a.subarray(0, this.records));
      return b;
    };
    this.lo = copy(this.lo);
    this.hi = copy(this.hi);
    this.counts = copy(this.counts);
    this.snaps = copy(this.snaps);
    this.offs = copy(this.offs);
    this.lens = copy(this.lens);
  }

  private growRecords(): void {
    this.resizeRecords(this.lo.length * 2);
  }

  /** After most nodes were forgotten: give the memory back. */
  private shrink(): void {
    const n = Math.max(MIN_RECORDS, this.lo.length / 2);
    this.resizeRecords(n);
    this.rebuildIndex(n * 2);
    this.compact(Math.max(MIN_ARENA, this.arena.length / 2));
  }

  // --- arena ---------------------------------------------------------------------------

  private store(path: Buffer | [Buffer, Buffer]): number {
    const len = pathLength(path);
    if (this.arenaUsed + len > this.arena.length) {
      const live = this.arenaUsed - this.arenaDead;
      let size = this.arena.length;
      while (live + len > size * 0.75) size *= 2;
      if (size > MAX_ARENA) throw new SnapfsError('IO_ERROR', 'too many nodes held by the kernel (path arena full)');
      this.compact(size);
    }
    const off = this.arenaUsed;
    if (Buffer.isBuffer(path)) path.copy(this.arena, off);
    else {
      let at = off;
      if (path[0].length) {
        at += path[0].copy(this.arena, at);
        this.arena[at++] = 0x2f;
      }
      path[1].copy(this.arena, at);
    }
    this.arenaUsed += len;
    return off;
  }

  /** Copies the live paths, in record order, into a fresh arena of `size` bytes. */
  private compact(size: number): void {
    const live = this.arenaUsed - this.arenaDead;
    const to = Buffer.allocUnsafeSlow(Math.max(size, live, MIN_ARENA));
    let at = 0;
    for (let r = 0; r < this.records; r++) {
      const off = this.offs[r]!;
      const len = this.lens[r]!;
      this.arena.copy(to, at, off, off + len);
      this.offs[r] = at;
      at += len;
    }
    this.arena = to;
    this.arenaUsed = at;
    this.arenaDead = 0;
  }
}

function pathLength(p: Buffer | [Buffer, Buffer]): number {
  if (Buffer.isBuffer(p)) return p.length;
  return p[0].length ? p[0].length + 1 + p[1].length : p[1].length;
}

function lo32(id: bigint): number {
  return Number(BigInt.asUintN(32, id));
}

function hi32(id: bigint): number {
  return Number(BigInt.asUintN(32, id >> 32n));
}
