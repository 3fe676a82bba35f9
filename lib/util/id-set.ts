// Sets and maps of 16-byte blob ids kept in flat typed arrays: open addressing over slots
// of u32 words (four for the id, a fifth for a map's value), the table at most 3/4 full,
// so a set costs 21-43 bytes per id and a map 27-54. A Set of hex strings costs ~100 bytes
// per id and a Map to objects several hundred: that made check O(blobs) at ~1.4 KiB each.

const ID_BYTES = 16;
const MIN_SLOTS = 16;

class IdTable {
  /** `stride` words per slot: the id (little-endian words), then any value. */
  protected words: Uint32Array;
  /** One bit per slot: taken (an all-zero id is a valid id, so it cannot mark empty). */
  private taken: Uint32Array;
  private mask: number;
  private count = 0;
  // Ids are keyed hashes, uniform in a healthy repository; the random seed keeps crafted
  // ids (a hostile pack's trailer) from all landing in one probe run.
  private readonly seed = (Math.random() * 0x1_0000_0000) >>> 0;

  constructor(protected readonly stride: number, expected: number) {
    let slots = MIN_SLOTS;
    while (slots * 3 < expected * 4) slots *= 2;
    this.mask = slots - 1;
    this.words = new Uint32Array(slots * stride);
    this.taken = new Uint32Array(Math.ceil(slots / 32));
  }

  get size(): number {
    return this.count;
  }

  /** Bytes the table holds. */
  get bytes(): number {
    return this.words.byteLength + this.taken.byteLength;
  }

  /** The slot of `id`, or -1. */
  protected find(id: Buffer): number {
    checkId(id);
    const w0 = id.readUInt32LE(0);
    const w1 = id.readUInt32LE(4);
    const w2 = id.readUInt32LE(8);
    const w3 = id.readUInt32LE(12);
    for (let s = this.hash(w0, w1, w2, w3) & this.mask; ; s = (s + 1) & this.mask) {
      if (!this.isTaken(s)) return -1;
      if (this.matches(s, w0, w1, w2, w3)) return s;
    }
  }

  /** The slot of `id`, taken for it when new; `added` says which. */
  protected insert(id: Buffer): { slot: number; added: boolean } {
    checkId(id);
    if ((this.count + 1) * 4 > (this.mask + 1) * 3) this.grow();
    const w0 = id.readUInt32LE(0);
    const w1 = id.readUInt32LE(4);
    const w2 = id.readUInt32LE(8);
    const w3 = id.readUInt32LE(12);
    let s = this.hash(w0, w1, w2, w3) & this.mask;
    for (; this.isTaken(s); s = (s + 1) & this.mask) if (this.matches(s, w0, w1, w2, w3)) return { slot: s, added: false };
    const o = s * this.stride;
    this.words[o] = w0;
    this.words[o + 1] = w1;
    this.words[o + 2] = w2;
    this.words[o + 3] = w3;
    this.taken[s >>> 5]! |= 1 << (s & 31);
    this.count++;
    return { slot: s, added: true };
  }

  private grow(): void {
    const old = this.words;
    const oldTaken = this.taken;
    const slots = (this.mask + 1) * 2;
    const stride = this.stride;
    this.words = new Uint32Array(slots * stride);
    this.taken = new Uint32Array(Math.ceil(slots / 32));
    this.mask = slots - 1;
    for (let from = 0; from < slots / 2; from++) {
      if (!(oldTaken[from >>> 5]! & (1 << (from & 31)))) continue;
      const o = from * stride;
      let s = this.hash(old[o]!, old[o + 1]!, old[o + 2]!, old[o + 3]!) & this.mask;
      while (this.isTaken(s)) s = (s + 1) & this.mask;
      this.words.set(old.subarray(o, o + stride), s * stride);
      this.taken[s >>> 5]! |= 1 << (s & 31);
    }
  }

  private hash(w0: number, w1: number, w2: number, w3: number): number {
    let h = Math.imul(w0 ^ this.seed, 0x9e3779b1);
    h = Math.imul(h ^ (h >>> 15) ^ w1, 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13) ^ w2, 0xc2b2ae35);
    h = Math.imul(h ^ (h >>> 16) ^ w3, 0x27d4eb2f);
    return (h ^ (h >>> 15)) >>> 0;
  }

  private isTaken(s: number): boolean {
    return (this.taken[s >>> 5]! & (1 << (s & 31))) !== 0;
  }

  private matches(s: number, w0: number, w1: number, w2: number, w3: number): boolean {
    const o = s * this.stride;
    const w = this.words;
    return w[o] === w0 && w[o + 1] === w1 && w[o + 2] === w2 && w[o + 3] === w3;
  }
}

export class IdSet extends IdTable {
  constructor(expected = 0) {
    super(4, expected);
  }

  has(id: Buffer): boolean {
    return this.find(id) >= 0;
  }

  /** Adds `id`; false when it was already there. */
  add(id: Buffer): boolean {
    return this.insert(id).added;
  }
}

/**
 * Ids to strings, for few distinct strings over many ids (why each damaged blob is bad:
 * "its pack X is missing" for all of a pack's blobs): each string is kept once.
 */
export class IdMap extends IdTable {
  private readonly strings: string[] = [];
  private readonly numbers = new Map<string, number>();

  constructor(expected = 0) {
    super(5, expected);
  }

  get(id: Buffer): string | undefined {
    if (this.size === 0) return undefined;
    const s = this.find(id);
    return s < 0 ? undefined : this.strings[this.words[s * 5 + 4]!];
  }

  set(id: Buffer, value: string): void {
    let n = this.numbers.get(value);
    if (n === undefined) {
      n = this.strings.push(value) - 1;
      this.numbers.set(value, n);
    }
    const { slot } = this.insert(id); // first: inserting may replace this.words
    this.words[slot * 5 + 4] = n;
  }
}

function checkId(id: Buffer): void {
  if (id.length !== ID_BYTES) throw new RangeError(`blob ids are ${ID_BYTES} bytes, got ${id.length}`);
}
