// Reads directory trees lazily: nodes are decoded on demand and kept in a byte-bounded
// cache. Lookups in a big directory binary-search the index node, then the one leaf
// page that can hold the name: never a scan of the whole directory.

import { BlobId, idToHex } from '../format/blob-id.js';
import { BlobType } from '../format/pack.js';
import { EntryKind, TreeEntry, TreeNode, compareNames, decodeTreeNode } from '../format/tree.js';
import { BlobReader } from '../store/blob-store.js';
import { ByteLru } from '../util/lru.js';
import { CorruptDataError, SnapfsError } from '../errors.js';

export const DEFAULT_TREE_CACHE_BYTES = 16 * 1024 * 1024;
/** Subtrees read ahead and not yet asked for, at most... */
const AHEAD_NODES = 256;
/** ...and what they may cost once decoded (see decodedBytes). */
const AHEAD_BYTES = 16 * 1024 * 1024;

/**
 * What a decoded node costs in memory: a TreeEntry (object, name Buffer, chunk-list
 * Buffer, three bigints) is ~600 bytes on the V8 heap whatever its encoded size (~50 bytes
 * for a small file), as heap snapshots of a 100,000-entry restore showed; charging encoded
 * bytes let a "64 MiB" cache hold half a gigabyte.
 */
function decodedBytes(node: TreeNode, rawBytes: number): number {
  const objects = node.kind === 'leaf' ? node.entries.length * 600 : node.pages.length * 200;
  return rawBytes + objects + 256;
}

function decodeNode(key: string, raw: Buffer): TreeNode {
  try {
    return decodeTreeNode(raw);
  } catch (err) {
    throw new CorruptDataError(`tree ${key}: ${(err as Error).message}`, { cause: err });
  }
}

export class TreeReader {
  private readonly cache: ByteLru<string, TreeNode>;
  private readonly loading = new Map<string, Promise<TreeNode>>();
  /**
   * Nodes read ahead by prefetchSubtrees, each handed over once, to the first `node` call
   * for it, and not cached: a walk visits each once, and keeping them (or the LRU full of
   * them) only made the garbage collector copy them around.
   */
  private readonly ahead = new Map<string, { node: Promise<TreeNode>; bytes: number }>();
  private aheadBytes = 0;

  constructor(private readonly blobs: BlobReader, cacheBytes = DEFAULT_TREE_CACHE_BYTES) {
    this.cache = new ByteLru(cacheBytes);
  }

  async node(id: BlobId): Promise<TreeNode> {
    const key = idToHex(id);
    const early = this.ahead.get(key);
    if (early) {
      this.ahead.delete(key);
      this.aheadBytes -= early.bytes;
      return early.node;
    }
    const hit = this.cache.get(key);
    if (hit) return hit;
    return this.loading.get(key) ?? this.load(key, this.blobs.get(id, BlobType.Tree));
  }

  /**
   * Starts reading the nodes of the directories among `entries` (the subtrees a walk is
   * about to visit), several per read where they lie close together in a pack. Up to
   * AHEAD_NODES and AHEAD_BYTES (decoded) wait to be asked for; failures are left for
   * `node` to report when it is.
   */
  prefetchSubtrees(entries: readonly TreeEntry[]): void {
    const read = this.readSubtrees(
      entries,
      (count) => this.ahead.size + count < AHEAD_NODES && this.aheadBytes < AHEAD_BYTES,
      (key) => this.ahead.has(key),
    );
    for (const [key, raw] of read) {
      const slot = { node: raw.then((bytes) => decodeNode(key, bytes)), bytes: 0 };
      slot.node.then(
        (node) => {
          if (this.ahead.get(key) !== slot) return; // taken already
          slot.bytes = decodedBytes(node, 0);
          this.aheadBytes += slot.bytes;
        },
        () => undefined,
      );
      this.ahead.set(key, slot);
    }
  }

  /**
   * Starts reading the nodes of the directories among `entries` (at most `max`) into the
   * cache itself, several per read where they lie close together in a pack: for a reader
   * that comes back to a node (a mount: a listing, then lookups in it) and may never ask
   * for some, unlike the walk prefetchSubtrees serves. Failures are left for `node`.
   */
  prefetchIntoCache(entries: readonly TreeEntry[], max: number): void {
    const read = this.readSubtrees(entries, (count) => count < max, (key) => this.cache.has(key));
    for (const [key, raw] of read) this.load(key, raw).catch(() => undefined);
  }

  /**
   * Starts reading, with getMany (several per read), the trees of the subdirectories among
   * `entries` not being loaded and not `held`, while there is `room` for one more (given
   * how many are taken so far). Empty when the index cannot be read (`node` will say so).
   */
  private readSubtrees(entries: readonly TreeEntry[], room: (count: number) => boolean, held: (key: string) => boolean): Map<string, Promise<Buffer>> {
    const ids: BlobId[] = [];
    const keys: string[] = [];
    for (const e of entries) {
      if (!room(ids.length)) break;
      if (!e.subtree) continue;
      const key = idToHex(e.subtree);
      if (this.loading.has(key) || held(key) || keys.includes(key)) continue;
      ids.push(e.subtree);
      keys.push(key);
    }
    const read = new Map<string, Promise<Buffer>>();
    if (ids.length === 0) return read;
    try {
      const raws = this.blobs.getMany(ids, BlobType.Tree);
      keys.forEach((key, i) => read.set(key, raws[i]!));
    } catch {
      // the index cannot be read: `node` will say so
    }
    return read;
  }

  /** Drops a subtree read ahead that the walk will not visit (deleted, excluded). */
  dropAhead(id: BlobId): void {
    const key = idToHex(id);
    const early = this.ahead.get(key);
    if (!early) return;
    this.ahead.delete(key);
    this.aheadBytes -= early.bytes;
  }

  private load(key: string, raw: Promise<Buffer>): Promise<TreeNode> {
    const p = raw.then((bytes) => {
      const node = decodeNode(key, bytes);
      this.cache.set(key, node, decodedBytes(node, bytes.length));
      return node;
    });
    this.loading.set(key, p);
    p.then(() => this.loading.delete(key), () => this.loading.delete(key));
    return p;
  }

  private async leaf(id: BlobId): Promise<TreeEntry[]> {
    const n = await this.node(id);
    if (n.kind !== 'leaf') throw new CorruptDataError(`tree ${idToHex(id)}: index node where a page was expected`);
    return n.entries;
  }

  async count(dirId: BlobId): Promise<number> {
    const n = await this.node(dirId);
    return n.kind === 'leaf' ? n.entries.length : n.total;
  }

  async lookup(dirId: BlobId, name: Buffer): Promise<TreeEntry | undefined> {
    const n = await this.node(dirId);
    let entries: TreeEntry[];
    if (n.kind === 'leaf') {
      entries = n.entries;
    } else {
      // Last page whose first name <= name.
      let lo = 0;
      let hi = n.pages.length - 1;
      let found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        if (compareNames(n.pages[mid]!.firstName, name) <= 0) {
          found = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      if (found < 0) return undefined;
      entries = await this.leaf(n.pages[found]!.id);
    }
    let lo = 0;
    let hi = entries.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = compareNames(entries[mid]!.name, name);
      if (c === 0) return entries[mid];
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  /** The position (as `entries` counts) of the first entry named after `name`. */
  async positionAfter(dirId: BlobId, name: Buffer): Promise<number> {
    const n = await this.node(dirId);
    let base = 0;
    let entries: readonly TreeEntry[];
    if (n.kind === 'leaf') {
      entries = n.entries;
    } else {
      if (n.pages.length === 0) return 0;
      // The last page whose first name <= name (the first when none is).
      let lo = 1;
      let hi = n.pages.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareNames(n.pages[mid]!.firstName, name) <= 0) lo = mid + 1;
        else hi = mid;
      }
      const page = lo - 1;
      for (let i = 0; i < page; i++) base += n.pages[i]!.count;
      entries = await this.leaf(n.pages[page]!.id);
    }
    let lo = 0;
    let hi = entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareNames(entries[mid]!.name, name) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return base + lo;
  }

  /** Entries from position `start` on, in name order, loading one page at a time. */
  async *entries(dirId: BlobId, start = 0): AsyncGenerator<TreeEntry> {
    const n = await this.node(dirId);
    if (n.kind === 'leaf') {
      for (let i = start; i < n.entries.length; i++) yield n.entries[i]!;
      return;
    }
    let base = 0;
    let prev: Buffer | undefined;
    for (const page of n.pages) {
      if (base + page.count > start) {
        const entries = await this.leaf(page.id);
        checkPage(dirId, page.firstName, page.count, entries, prev);
        prev = entries[entries.length - 1]?.name;
        for (let i = Math.max(0, start - base); i < entries.length; i++) yield entries[i]!;
      } else prev = undefined; // pages skipped: the order across them was checked when read
      base += page.count;
    }
  }

  /**
   * The entries a leaf page at a time, in name order (checked like `entries`): for a merge
   * that must not wait for every entry. The next page is read while this one is used.
   */
  async *pages(dirId: BlobId): AsyncGenerator<readonly TreeEntry[]> {
    const n = await this.node(dirId);
    if (n.kind === 'leaf') {
      yield n.entries;
      return;
    }
    let prev: Buffer | undefined;
    let next = n.pages.length > 0 ? this.leaf(n.pages[0]!.id) : undefined;
    for (let i = 0; i < n.pages.length; i++) {
      const page = n.pages[i]!;
      const entries = await next!;
      next = i + 1 < n.pages.length ? this.leaf(n.pages[i + 1]!.id) : undefined;
      next?.catch(() => undefined); // a failure is thrown when it is awaited, if ever
      checkPage(dirId, page.firstName, page.count, entries, prev);
      prev = entries[entries.length - 1]?.name;
      yield entries;
    }
  }

  async readAll(dirId: BlobId): Promise<TreeEntry[]> {
    const out: TreeEntry[] = [];
    for await (const e of this.entries(dirId)) out.push(e);
    return out;
  }

  /** Follows `components` from a root tree. Returns the entry (undefined = the root itself). */
  async resolve(rootId: BlobId, components: readonly Buffer[], display: string): Promise<{ entry?: TreeEntry; dirId?: BlobId }> {
    let dirId: BlobId = rootId;
    let entry: TreeEntry | undefined;
    for (let i = 0; i < components.length; i++) {
      if (entry && entry.kind !== EntryKind.Directory) {
        throw new SnapfsError('NOT_A_DIRECTORY', `${display}: not a directory`);
      }
      entry = await this.lookup(dirId, components[i]!);
      if (!entry) throw new SnapfsError('PATH_NOT_FOUND', `${display}: no such file or directory in the snapshot`);
      if (entry.subtree) dirId = entry.subtree;
    }
    return entry ? { entry, dirId: entry.subtree } : { dirId: rootId };
  }
}

/**
 * A page of a big directory must hold what its index entry says: `count` entries, the first
 * named `firstName`, all after the previous page's last. Each page is sorted on its own, so
 * this is what keeps one name from appearing twice in a directory (two pages of a crafted or
 * damaged tree: a symlink, then a directory of the same name).
 */
export function checkPage(dirId: BlobId, firstName: Buffer, count: number, entries: readonly TreeEntry[], prevName: Buffer | undefined): void {
  const what = `tree ${idToHex(dirId)}`;
  if (entries.length !== count) throw new CorruptDataError(`${what}: page count mismatch`);
  if (entries.length > 0 && !entries[0]!.name.equals(firstName)) throw new CorruptDataError(`${what}: page does not start with the name its index gives`);
  if (prevName && entries.length > 0 && compareNames(prevName, entries[0]!.name) >= 0) throw new CorruptDataError(`${what}: pages overlap (a name out of order or twice)`);
}

/** Splits a path inside a snapshot into name components (raw bytes). */
export function pathComponents(p: string | Buffer): Buffer[] {
  const buf = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= buf.length; i++) {
    if (i === buf.length || buf[i] === 0x2f) {
      if (i > start) {
        const c = buf.subarray(start, i);
        if (!(c.length === 1 && c[0] === 0x2e)) {
          if (c.length === 2 && c[0] === 0x2e && c[1] === 0x2e) throw new SnapfsError('INVALID_ARGUMENT', `path may not contain '..': ${buf.toString()}`);
          out.push(c);
        }
      }
      start = i + 1;
    }
  }
  return out;
}
