// The browsable view of a repository, as an inode-based virtual file system that knows
// nothing about FUSE: lookup(parent, name), getattr, readdir, readlink, open/read/release,
// statfs and xattrs. lib/fuse adapts it to fuse-native; a future low-level binding can
// use it unchanged.
//
//   /                              root (node 1)
//   /<source components>/          synthetic directories; sources nest ("a/b" under "a")
//   /<source>/<snapshot name>/     one directory per snapshot (SnapshotRecord.name)
//   /<source>/last                 relative symlink to the newest snapshot's name
//
// Two numbers name a node. The node id is the VFS's handle: unique per (snapshot, path),
// a 64-bit hash of that identity, so it is the same after a remount. The reported inode
// number (st_ino) follows the metadata rules instead and is deliberately shared: a
// directory has the same st_ino in every snapshot, an unchanged file too (see docs/mount.md).
//
// Memory stays bounded: nodes live in a byte-bounded LRU, trees are decoded lazily into
// TreeReader's bounded cache, file chunks into FileReader's, and big directories are read
// page by page. A node the kernel still holds (ref/forget, for an inode-based binding) is
// kept as (snapshot, path) only, in a PinTable, and rebuilt from the trees when it has
// left the LRU; the path-based fuse adapter simply resolves the path again.

import { xxhash } from '../platform/xxhash.js';
import { Repository } from '../store/repository.js';
import { SnapshotRecord, publishedAtNs } from '../format/snapshot.js';
import { EntryKind, TreeEntry } from '../format/tree.js';
import { BlobId, idFromHex } from '../format/blob-id.js';
import { TreeReader, pathComponents } from '../tree/tree-reader.js';
import { FileReader, OpenFile, StoredChunk } from './file-reader.js';
import { ByteLru } from '../util/lru.js';
import { PinTable } from './pin-table.js';
import { SnapfsError } from '../errors.js';

export const ROOT_ID = 1n;

/** The only xattr namespace the mount shows (backups store all; see xattrsOf). */
export const XATTR_NAMESPACES: readonly string[] = ['user.'];

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const TYPE_BITS: Record<EntryKind, number> = {
  [EntryKind.File]: S_IFREG,
  [EntryKind.Directory]: S_IFDIR,
  [EntryKind.Symlink]: S_IFLNK,
  [EntryKind.Fifo]: 0o010000,
  [EntryKind.CharDevice]: 0o020000,
  [EntryKind.BlockDevice]: 0o060000,
  [EntryKind.Socket]: 0o140000,
};

/** Preferred I/O size reported in st_blksize: one FUSE read request (128 KiB). */
const BLKSIZE = 128 * 1024;
const O_ACCMODE = 3;
const O_TRUNC = 0o1000;
/** readFilesAfter lets other requests in after this many files. */
const YIELD_EVERY_FILES = 8;
/** Files read concurrently by node (readNode) whose read-ahead state is kept. */
const NODE_READ_STATES = 64;
const MASK64 = 0xffffffffffffffffn;

export interface VfsAttr {
  /** Reported inode number (64-bit; never 0 or 1 except the root, whose is 1). */
  ino: bigint;
  /** File type and permission bits, as in st_mode. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  /** 512-byte blocks allocated (from the source: tells a sparse file). */
  blocks: number;
  blksize: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export interface VfsEntry {
  /** Node id, to pass to getattr/readdir/open... */
  id: bigint;
  attr: VfsAttr;
}

export interface VfsDirEntry {
  name: Buffer;
  /** Reported inode number. */
  ino: bigint;
  /** File type bits (S_IFMT part of st_mode). */
  type: number;
  /** With readdir's `nodes`, for snapshot content: what lookup(dir, name) gives (it never changes). */
  node?: VfsEntry & { noXattrs: boolean };
}

export interface VfsDirPage {
  /** The directory's own inode number. */
  ino: bigint;
  entries: VfsDirEntry[];
  /** Offset to continue from, or undefined at the end. */
  next: number | undefined;
}

/** One pass of reading ahead across files (Vfs.readFilesAfter, Vfs.readFilesIn). */
export interface FilesAhead {
  /** Files handed over, bytes handed over, largest file, directory entries looked at. */
  limits: { files: number; bytes: number; fileBytes: number; entries: number };
  /** Files passed over (handed over already). */
  skip(id: bigint): boolean;
  /**
   * Takes one file's node id, inode number (st_ino: whoever serves the bytes under the
   * node id checks that it still names this entry), size and where its chunks are stored;
   * false to stop.
   */
  use(id: bigint, ino: bigint, size: number, chunks: StoredChunk[]): boolean;
}

export interface VfsStatfs {
  /** Bytes the repository's packs occupy. */
  bytes: number;
  /** Number of snapshots shown. */
  snapshots: number;
  nameMax: number;
}

export interface VfsOptions {
  /**
   * Decoded tree pages kept in memory, as TreeReader charges them (what their entries
   * take on the heap: objects, Buffers and BigInts); default 16 MiB, ~25,000 entries.
   */
  treeCacheBytes?: number;
  /** Decompressed file chunks kept in memory (read-ahead lands here too); default 8 MiB. */
  chunkCacheBytes?: number;
  /** Node table size (estimated bytes); default 4 MiB. */
  nodeCacheBytes?: number;
  /** Chunks read ahead when a file is read sequentially; default 4. */
  readAheadChunks?: number;
  /** Owner of the synthetic directories (root, source dirs, `last`). */
  uid?: number;
  gid?: number;
  /** Damaged snapshot records and similar: reported, never fatal. */
  onWarning?: (message: string) => void;
}

/** `serial`: set when the node is first remembered, unique for the mount's life (serialOf). */
type Node = { serial?: number } & (
  | { type: 'root'; id: bigint }
  | { type: 'source'; id: bigint; prefix: string }
  | { type: 'last'; id: bigint; source: string }
  | { type: 'snapshot'; id: bigint; snap: SnapshotRecord; attr?: VfsAttr }
  | { type: 'entry'; id: bigint; snap: SnapshotRecord; path: Buffer; entry: TreeEntry; attr: VfsAttr; parentIno: bigint });

/** A directory level of the synthetic part: children components and, for a source, its snapshots. */
interface Level {
  prefix: string;
  /** Next path components of sources below this prefix. */
  children: Set<string>;
  /** Snapshots when this prefix is itself a source (sorted oldest to newest). */
  snapshots: SnapshotRecord[];
  byName: Map<string, SnapshotRecord>;
  /** Newest publication time of any snapshot at or below this prefix. */
  newestNs: bigint;
}

interface CatalogState {
  ids: Set<string>;
  levels: Map<string, Level>;
  count: number;
}

interface Handle {
  node: Node & { type: 'entry' };
  file: OpenFile;
  /** End of the previous read: a read starting there is sequential. */
  nextOffset: number;
  sequential: number;
}

let scratch = Buffer.allocUnsafe(8192);

/** A path inside a snapshot: its bytes, or [parent path, name] for parent + '/' + name (no copy needed). */
type PathRef = Buffer | [Buffer, Buffer];
type HashPart = string | PathRef;

function partLength(p: HashPart): number {
  if (typeof p === 'string') return p.length * 3;
  if (Buffer.isBuffer(p)) return p.length;
  return p[0].length + 1 + p[1].length;
}

/** 64-bit hash of a NUL-separated identity (names never contain NUL). */
function hash64(parts: HashPart[]): bigint {
  let need = 0;
  for (const p of parts) need += partLength(p) + 1;
  if (need > scratch.length) scratch = Buffer.allocUnsafe(need * 2);
  let at = 0;
  for (const p of parts) {
    if (typeof p === 'string') at += scratch.write(p, at, 'utf8');
    else if (Buffer.isBuffer(p)) at += p.copy(scratch, at);
    else {
      if (p[0].length) {
        at += p[0].copy(scratch, at);
        scratch[at++] = 0x2f;
      }
      at += p[1].copy(scratch, at);
    }
    scratch[at++] = 0;
  }
  return xxhash.xxh64(scratch.subarray(0, at), 0x736e617066735fn) & MASK64;
}

/** A reported inode number: never 0 or 1, also in its low 32 bits (what fuse-native can pass). */
function inoOf(parts: HashPart[]): bigint {
  let h = hash64(parts);
  if ((h & 0xffffffffn) <= 1n) h ^= 2n;
  return h;
}

/**
 * Tests only: SNAPFS_TEST_NODE_ID_BITS keeps this many low bits of every node id, so that
 * ids collide in a small tree as they would (rarely) among millions of 64-bit ones.
 */
const NODE_ID_MASK = ((): bigint => {
  const bits = Number(process.env.SNAPFS_TEST_NODE_ID_BITS ?? 64);
  return Number.isInteger(bits) && bits >= 4 && bits < 64 ? (1n << BigInt(bits)) - 1n : MASK64;
})();

function nodeIdOf(parts: HashPart[]): bigint {
  const h = hash64(parts) & NODE_ID_MASK;
  return h <= 1n ? h + 2n : h;
}

/** `what` (a path in the mount) hashed to node id `id`, which names another entry the mount holds. */
function idCollision(what: string, id: bigint): SnapfsError {
  return new SnapfsError('NODE_ID_COLLISION', `${what}: its node id ${id} names another entry the mount holds; refused until that one is forgotten`);
}

function entryCollision(snap: SnapshotRecord, parentPath: Buffer, name: Buffer, id: bigint): SnapfsError {
  const path = parentPath.length ? `${parentPath.toString('utf8')}/${name.toString('utf8')}` : name.toString('utf8');
  return idCollision(`${snap.source}/${snap.name}/${path}`, id);
}

function notFound(what: string): SnapfsError {
  return new SnapfsError('PATH_NOT_FOUND', `${what}: no such file or directory`);
}

export class Vfs {
  private state: CatalogState = { ids: new Set(), levels: new Map(), count: 0 };
  private readonly trees: TreeReader;
  private readonly files: FileReader;
  private readonly nodes: ByteLru<bigint, Node>;
  /** Held synthetic nodes (few): whole. */
  private readonly pinned = new Map<bigint, { node: Node; count: number }>();
  /** Held snapshot content (up to millions): (snapshot number, path) only. */
  private readonly pins = new PinTable();
  /** Snapshots by PinTable snapshot number, and back; only ever grows (a few per snapshot seen). */
  private readonly pinSnaps: SnapshotRecord[] = [];
  private readonly pinSnapNumbers = new Map<string, number>();
  private childRefs = 0;
  /**
   * Ids the kernel took for two entries at once (refChild met one held as another entry:
   * a race the binding's checks should leave no room for). The kernel may now have one
   * inode for both, or a broken one: every request about the id fails (EIO) until it is
   * forgotten.
   */
  private readonly clashed = new Set<bigint>();
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;
  /** Read state of files opened by the binding itself (see readNode), least recent first. */
  private readonly nodeReads = new Map<bigint, Handle>();
  private readonly root: Node = { type: 'root', id: ROOT_ID, serial: 0 };
  private nodeSerials = 0;
  private loadedAt = 0;
  private loading: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private statfsCache: { at: number; bytes: number } | undefined;
  private indexRefreshedAt = 0;
  private readonly reportedDamage = new Set<string>();
  private readonly rootNlink = new Map<string, number>();
  private _epoch = 0;
  private readonly removedListeners: Array<() => void> = [];
  readonly uid: number;
  readonly gid: number;

  private constructor(private readonly repo: Repository, private readonly opts: VfsOptions) {
    // ~25,000 decoded entries (TreeReader charges what they really cost on the heap).
    this.trees = new TreeReader(repo.blobs, opts.treeCacheBytes ?? 16 * 1024 * 1024);
    this.files = new FileReader(repo.blobs, { cacheBytes: opts.chunkCacheBytes ?? 8 * 1024 * 1024, recycle: true });
    this.nodes = new ByteLru(opts.nodeCacheBytes ?? 4 * 1024 * 1024);
    this.uid = opts.uid ?? process.getuid?.() ?? 0;
    this.gid = opts.gid ?? process.getgid?.() ?? 0;
  }

  static async open(repo: Repository, opts: VfsOptions = {}): Promise<Vfs> {
    const vfs = new Vfs(repo, opts);
    await vfs.refresh();
    return vfs;
  }

  /**
   * Increments whenever snapshots disappear (forget): names cached by a caller may then
   * point elsewhere. New snapshots do not change it: they only add names.
   */
  get epoch(): number {
    return this._epoch;
  }

  /** Calls `fn` whenever snapshots disappear (when epoch increments). */
  onSnapshotsRemoved(fn: () => void): void {
    this.removedListeners.push(fn);
  }

  /** Re-reads the snapshot list every `intervalMs` so new snapshots appear and `last` moves. */
  startPolling(intervalMs = 1000): void {
    this.stopPolling();
    this.timer = setInterval(() => {
      this.refresh().catch((err) => this.warn(`reading the snapshot list: ${(err as Error).message}`));
    }, intervalMs);
    this.timer.unref();
  }

  stopPolling(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.stopPolling();
    this.handles.clear();
  }

  private warn(message: string): void {
    this.opts.onWarning?.(message);
  }

  /** Loads the snapshot list now (concurrent callers share one load). */
  refresh(): Promise<void> {
    if (!this.loading) {
      this.loading = this.load().finally(() => {
        this.loading = undefined;
      });
    }
    return this.loading;
  }

  /** The synthetic part is at most `maxAgeMs` old when this resolves. */
  private async fresh(maxAgeMs = 1000): Promise<void> {
    if (Date.now() - this.loadedAt >= maxAgeMs) await this.refresh();
  }

  private async load(): Promise<void> {
    const started = Date.now();
    const { records, damaged } = await this.repo.snapshots.load();
    for (const d of damaged) {
      if (!this.reportedDamage.has(d.file)) {
        this.reportedDamage.add(d.file);
        this.warn(`ignoring damaged snapshot record ${d.file}: ${d.error}`);
      }
    }
    const ids = new Set(records.map((r) => r.id));
    const old = this.state.ids;
    const same = ids.size === old.size && [...ids].every((id) => old.has(id));
    if (!same || started - this.indexRefreshedAt > 10_000) {
      // The writer commits packs to the index before it writes the record, so after this
      // refresh every blob a listed snapshot references is visible. Refreshing also lets
      // the writer reuse pages an old read transaction would pin.
      this.repo.index.refresh();
      this.indexRefreshedAt = started;
      this.statfsCache = undefined;
    }
    if (!same) {
      const removed = [...old].some((id) => !ids.has(id));
      this.state = buildState(records, ids);
      if (removed) {
        this._epoch++;
        for (const fn of this.removedListeners) fn();
      }
    }
    this.loadedAt = started;
  }

  // --- nodes -----------------------------------------------------------------------

  /** A node in memory (the root, a held synthetic node or one in the LRU), or undefined. */
  private cachedNode(id: bigint): Node | undefined {
    if (id === ROOT_ID) return this.root;
    return this.pinned.get(id)?.node ?? this.nodes.get(id);
  }

  /** A node by id: from memory, or rebuilt from the trees when the kernel holds it. */
  private async node(id: bigint): Promise<Node> {
    if (this.clashed.has(id)) throw idCollision('a request', id);
    const n = this.cachedNode(id);
    if (n) return n;
    const held = this.pins.get(id);
    if (!held) throw new SnapfsError('STALE_HANDLE', `node ${id} is no longer known; look it up again`);
    return this.rebuild(id, this.pinSnaps[held.snap]!, held.path);
  }

  /**
   * The entry node of `path` in `snap`, found again through the trees (one lookup in the
   * parent directory when that is still cached, else one per component). The same
   * snapshot and path give the same node: trees never change.
   */
  private async rebuild(id: bigint, snap: SnapshotRecord, path: Buffer): Promise<Node & { type: 'entry' }> {
    this.snapshotLive(snap);
    const slash = path.lastIndexOf(0x2f);
    const parentPath = slash < 0 ? EMPTY : path.subarray(0, slash);
    const name = path.subarray(slash + 1);
    const dirId = await this.dirTreeAt(snap, parentPath);
    const entry = dirId && (await this.trees.lookup(dirId, name));
    if (!entry) throw new SnapfsError('STALE_HANDLE', `${path.toString('utf8')}: held by the kernel but no longer found in its snapshot`);
    const n = this.entryNode(snap, parentPath, entry, inoOf(['dir', snap.source, parentPath]));
    if (n.id !== id) throw new SnapfsError('STALE_HANDLE', `node ${id}: rebuilt as another node`);
    return n;
  }

  /** The tree of directory `path` in `snap`: from its cached node, else through the trees. */
  private async dirTreeAt(snap: SnapshotRecord, path: Buffer): Promise<BlobId | undefined> {
    if (!path.length) return idFromHex(snap.root);
    const dir = this.nodes.get(nodeIdOf(['entry', snap.id, path]));
    if (dir?.type === 'entry' && dir.snap.id === snap.id && dir.entry.subtree) return dir.entry.subtree;
    return (await this.trees.resolve(idFromHex(snap.root), pathComponents(path), path.toString('utf8'))).dirId;
  }

  /**
   * The repository's hash secret, for native code that verifies chunks as the store does
   * (readFilesAfter's consumer). Never shown: the mount has no path to it.
   */
  blobSecret(): Buffer {
    return Buffer.from(this.repo.config.hashSecret, 'hex');
  }

  /**
   * Whether a node is content inside a snapshot (immutable: its attributes, name bindings
   * and data never change, so the kernel may cache them for long). The root, source
   * directories and `last` change as backups commit, and a snapshot directory itself
   * leaves when it is forgotten: those are revalidated quickly, and with them every path
   * that walks through them.
   */
  isSnapshotContent(id: bigint): boolean {
    if (id === ROOT_ID) return false;
    const n = this.cachedNode(id);
    return n !== undefined ? n.type === 'entry' : this.pins.has(id);
  }

  /** The inode number of the directory holding entry `id`, when its node is in memory. */
  directoryOf(id: bigint): bigint | undefined {
    const n = this.cachedNode(id);
    return n?.type === 'entry' ? n.parentIno : undefined;
  }

  /**
   * The serial of the node id names while it is in memory, else undefined. A path-based
   * caller keeps it with a resolved path and uses the id again only while it is the same:
   * a node dropped and an id that came to name another entry (ids are hashes) both change it.
   */
  serialOf(id: bigint): number | undefined {
    return id === ROOT_ID ? 0 : this.cachedNode(id)?.serial;
  }

  /**
   * Nodes the kernel holds, the bytes their records take, and how many references came
   * from listings, not from lookups JS answered (refChild), for the memory log line.
   */
  get held(): { nodes: number; bytes: number; fromListings: number } {
    return { nodes: this.pinned.size + this.pins.size, bytes: this.pins.bytes, fromListings: this.childRefs };
  }

  /**
   * The snapshot directories the kernel holds, each as (its source directory's node id,
   * its name), and whether its snapshot is gone (forgotten). The kernel holds every
   * directory above a node it holds, so these cover every held node of snapshot content.
   */
  heldSnapshotDirs(): Array<{ parent: bigint; name: Buffer; gone: boolean }> {
    const dirs: Array<{ parent: bigint; name: Buffer; gone: boolean }> = [];
    for (const { node } of this.pinned.values()) {
      if (node.type !== 'snapshot') continue;
      dirs.push({ parent: nodeIdOf(['source', node.snap.source]), name: Buffer.from(node.snap.name, 'utf8'), gone: !this.state.ids.has(node.snap.id) });
    }
    return dirs;
  }

  /**
   * Whether node id `id` already names something other than `name` in `parentPath` of
   * `snap`: a node in memory or one the kernel holds. Ids are 64-bit hashes, so this
   * (almost) never happens; when it does, the newcomer is refused (EIO) rather than
   * answered under an id the kernel and the binding's caches know as another entry.
   */
  private idTakenByOther(id: bigint, snap: SnapshotRecord, parentPath: Buffer, name: Buffer): boolean {
    const n = this.cachedNode(id);
    if (n) return !(n.type === 'entry' && n.snap.id === snap.id && isChildPath(n.path, parentPath, name));
    return this.pins.holdsAs(id, this.pinSnapNumbers.get(snap.id), [parentPath, name]) === false;
  }

  private remember<N extends Node>(n: N): N {
    n.serial ??= ++this.nodeSerials;
    const size = n.type === 'entry' ? 700 + n.path.length + n.entry.name.length + (n.entry.content?.length ?? 0) + (n.entry.target?.length ?? 0) : 200;
    this.nodes.set(n.id, n, size);
    return n;
  }

  /**
   * Keeps a node known until forget (a kernel reference, for an inode-based binding): call
   * it right after the lookup that returned `id`, while the node is certainly cached.
   */
  ref(id: bigint): void {
    if (id === ROOT_ID) return;
    const p = this.pinned.get(id);
    if (p) {
      p.count++;
      return;
    }
    const n = this.nodes.get(id);
    if (n?.type === 'entry') this.pins.add(id, this.pinSnapNumber(n.snap), n.path);
    else if (n) this.pinned.set(id, { node: n, count: 1 });
    else if (this.pins.has(id)) this.pins.add(id, 0, EMPTY);
    else throw new SnapfsError('STALE_HANDLE', `node ${id} is no longer known; look it up again`);
  }

  /** The snapshot and path of directory `parentId`, which the kernel holds (or undefined). */
  private placeOf(parentId: bigint): { snap: SnapshotRecord; parentPath: Buffer } | undefined {
    const parent = this.cachedNode(parentId);
    if (parent?.type === 'entry' || parent?.type === 'snapshot') return { snap: parent.snap, parentPath: parent.type === 'entry' ? parent.path : EMPTY };
    const held = this.pins.get(parentId);
    return held && { snap: this.pinSnaps[held.snap]!, parentPath: held.path };
  }

  /**
   * Whether a listing of `parentId` may still hand over node `id` for `name`: readdir
   * found the id free, but lookups answered since may have given it to another entry.
   * Synchronous: call it right before the reply.
   */
  mayGiveListed(parentId: bigint, name: Buffer, id: bigint): boolean {
    const place = this.placeOf(parentId);
    return place !== undefined && !this.clashed.has(id) && !this.idTakenByOther(id, place.snap, place.parentPath, name);
  }

  /**
   * Like ref, for a node a binding found itself as `name` in directory `parentId` (from
   * a readdir entry's `node`): the kernel holds the parent, so it is known.
   */
  refChild(parentId: bigint, name: Buffer, id: bigint): void {
    const place = this.placeOf(parentId);
    if (!place) throw new SnapfsError('STALE_HANDLE', `node ${parentId} is no longer known; cannot hold its child`);
    const { snap, parentPath } = place;
    const path: [Buffer, Buffer] = [parentPath, name];
    if (nodeIdOf(['entry', snap.id, path]) !== id) throw new SnapfsError('STALE_HANDLE', `node ${id} is not ${name.toString('utf8')} in node ${parentId}`);
    if (this.idTakenByOther(id, snap, parentPath, name)) {
      // Only listings of names whose id was free carry nodes, but an id can be taken
      // between the listing and this lookup. A node the kernel does not hold yields.
      const p = this.pinned.get(id);
      if (p || this.pins.has(id)) {
        // One the kernel holds cannot: the binding gives no id it may hold as another
        // entry, so this is a race it missed. The reference still counts (its forget
        // comes), and the id serves neither entry until the kernel forgets it.
        if (p) p.count++;
        else this.pins.add(id, 0, EMPTY);
        this.clashed.add(id);
        this.nodeReads.delete(id);
        throw entryCollision(snap, parentPath, name, id);
      }
      this.nodes.delete(id);
    }
    this.pins.add(id, this.pinSnapNumber(snap), path);
    this.childRefs++;
  }

  forget(id: bigint, count = 1): void {
    const p = this.pinned.get(id);
    if (!p) {
      if (this.pins.release(id, count)) this.clashed.delete(id);
      return;
    }
    p.count -= count;
    if (p.count <= 0) {
      this.pinned.delete(id);
      this.clashed.delete(id);
      this.remember(p.node);
    }
  }

  private pinSnapNumber(snap: SnapshotRecord): number {
    let k = this.pinSnapNumbers.get(snap.id);
    if (k === undefined) {
      k = this.pinSnaps.push(snap) - 1;
      this.pinSnapNumbers.set(snap.id, k);
    }
    return k;
  }

  private snapshotLive(snap: SnapshotRecord): void {
    if (!this.state.ids.has(snap.id)) throw notFound(`${snap.source}/${snap.name}`);
  }

  private level(prefix: string): Level {
    const l = this.state.levels.get(prefix);
    if (!l) throw notFound(prefix || '/');
    return l;
  }

  private sourceNode(prefix: string): Node {
    return this.syntheticNode({ type: 'source', id: nodeIdOf(['source', prefix]), prefix }, prefix || '/', (k) => k.type === 'source' && k.prefix === prefix);
  }

  private lastNode(prefix: string): Node {
    return this.syntheticNode({ type: 'last', id: nodeIdOf(['last', prefix]), source: prefix }, `${prefix}/last`, (k) => k.type === 'last' && k.source === prefix);
  }

  private snapshotNode(snap: SnapshotRecord): Node & { type: 'snapshot' } {
    return this.syntheticNode({ type: 'snapshot', id: nodeIdOf(['snapshot', snap.id]), snap }, `${snap.source}/${snap.name}`, (k) => k.type === 'snapshot' && k.snap.id === snap.id);
  }

  /**
   * `n` (`what`, its path in the mount), or the node in memory that `same` recognizes as it; refused (EIO) when its id
   * names another node in memory or one the kernel holds, as entryNode does.
   */
  private syntheticNode<N extends Node>(n: N, what: string, same: (known: Node) => boolean): N {
    const known = this.cachedNode(n.id);
    if (known && same(known)) return known as N;
    if (known || this.pins.has(n.id)) throw idCollision(what, n.id);
    return this.remember(n);
  }

  private entryNode(snap: SnapshotRecord, parentPath: Buffer, entry: TreeEntry, parentIno: bigint): Node & { type: 'entry' } {
    const id = nodeIdOf(['entry', snap.id, parentPath.length ? [parentPath, entry.name] : entry.name]);
    const known = this.nodes.get(id);
    if (known && known.type === 'entry' && known.snap.id === snap.id && isChildPath(known.path, parentPath, entry.name)) return known;
    if (this.idTakenByOther(id, snap, parentPath, entry.name)) throw entryCollision(snap, parentPath, entry.name, id);
    const own = detachEntry(parentPath, entry);
    // Read state kept by id from an entry that had the id before (forgotten since).
    const read = this.nodeReads.get(id);
    if (read && !(read.node.snap.id === snap.id && read.node.path.equals(own.path))) this.nodeReads.delete(id);
    return this.remember({ type: 'entry', id, snap, path: own.path, entry: own.entry, attr: this.entryAttr(snap, own.path, own.entry), parentIno });
  }

  // --- attributes --------------------------------------------------------------------

  /** Publication time of generation `since` (falls back to the snapshot's own). */
  private sinceNs(snap: SnapshotRecord, since: number): bigint {
    const t = snap.generations[String(since)];
    return t !== undefined ? BigInt(t) : publishedAtNs(snap);
  }

  /** The reported inode number of an entry at `path` (bytes, '/'-joined) of a snapshot. */
  private entryIno(snap: SnapshotRecord, path: PathRef, e: TreeEntry): bigint {
    if (e.kind === EntryKind.Directory) return inoOf(['dir', snap.source, path]);
    const since = this.sinceNs(snap, e.since).toString();
    if (e.nlink > 1) return inoOf(['link', snap.source, String(e.device), e.inode.toString(), since]);
    return inoOf(['file', snap.source, path, since]);
  }

  private entryAttr(snap: SnapshotRecord, path: PathRef, e: TreeEntry): VfsAttr {
    return {
      ino: this.entryIno(snap, path, e),
      mode: TYPE_BITS[e.kind] | e.mode,
      nlink: e.nlink || 1,
      uid: e.uid,
      gid: e.gid,
      rdev: e.rdev,
      size: e.size,
      blocks: Math.ceil(e.allocated / 512),
      blksize: BLKSIZE,
      atimeNs: e.mtimeNs,
      mtimeNs: e.mtimeNs,
      ctimeNs: this.sinceNs(snap, e.since),
    };
  }

  private syntheticDirAttr(prefix: string): VfsAttr {
    const l = this.level(prefix);
    return {
      ino: prefix === '' ? ROOT_ID : inoOf(['source', prefix]),
      mode: S_IFDIR | 0o555,
      nlink: 2 + l.children.size + l.snapshots.length,
      uid: this.uid,
      gid: this.gid,
      rdev: 0,
      size: 0,
      blocks: 0,
      blksize: BLKSIZE,
      atimeNs: l.newestNs,
      mtimeNs: l.newestNs,
      ctimeNs: l.newestNs,
    };
  }

  private lastOf(source: string): SnapshotRecord {
    const snaps = this.state.levels.get(source)?.snapshots;
    const newest = snaps?.[snaps.length - 1];
    if (!newest) throw notFound(`${source}/last`);
    return newest;
  }

  private lastAttr(source: string): VfsAttr {
    const target = this.lastOf(source);
    const pub = publishedAtNs(target);
    return {
      ino: inoOf(['last', source, pub.toString()]),
      mode: S_IFLNK | 0o777,
      nlink: 1,
      uid: this.uid,
      gid: this.gid,
      rdev: 0,
      size: Buffer.byteLength(target.name),
      blocks: 0,
      blksize: BLKSIZE,
      atimeNs: pub,
      mtimeNs: pub,
      ctimeNs: pub,
    };
  }

  private async snapshotAttr(n: Node & { type: 'snapshot' }): Promise<VfsAttr> {
    if (n.attr) return n.attr;
    const snap = n.snap;
    let nlink = this.rootNlink.get(snap.id);
    if (nlink === undefined) {
      // The record does not store the root's link count: 2 + its subdirectories, as on disk.
      nlink = 2;
      for await (const e of this.trees.entries(idFromHex(snap.root))) if (e.kind === EntryKind.Directory) nlink++;
      this.rootNlink.set(snap.id, nlink);
    }
    const mtime = BigInt(snap.rootMeta.mtimeNs);
    n.attr = {
      ino: inoOf(['dir', snap.source, EMPTY]),
      mode: S_IFDIR | (snap.rootMeta.mode & 0o7777),
      nlink,
      uid: snap.rootMeta.uid,
      gid: snap.rootMeta.gid,
      rdev: 0,
      size: 0,
      blocks: 0,
      blksize: BLKSIZE,
      atimeNs: mtime,
      mtimeNs: mtime,
      ctimeNs: publishedAtNs(snap),
    };
    return n.attr;
  }

  private async attrOf(n: Node): Promise<VfsAttr> {
    switch (n.type) {
      case 'root':
        await this.fresh();
        return this.syntheticDirAttr('');
      case 'source':
        await this.fresh();
        return this.syntheticDirAttr(n.prefix);
      case 'last':
        await this.fresh();
        return this.lastAttr(n.source);
      case 'snapshot':
        this.snapshotLive(n.snap);
        return this.snapshotAttr(n);
      case 'entry':
        this.snapshotLive(n.snap);
        return n.attr;
    }
  }

  // --- operations --------------------------------------------------------------------

  /**
   * Attributes without waiting, for snapshot content already in the table (they never
   * change); undefined when they need work (synthetic nodes, an unknown node...).
   */
  cachedAttr(id: bigint): VfsAttr | undefined {
    const n = id === ROOT_ID ? undefined : this.cachedNode(id);
    if (!n || (n.type !== 'entry' && n.type !== 'snapshot') || !this.state.ids.has(n.snap.id)) return undefined;
    return n.attr;
  }

  /** Stored user.* xattrs without waiting, like cachedAttr; undefined when not at hand. */
  cachedXattrs(id: bigint): Array<[Buffer, Buffer]> | undefined {
    const n = id === ROOT_ID ? undefined : this.cachedNode(id);
    if (!n || !this.state.ids.has(n.type === 'entry' || n.type === 'snapshot' ? n.snap.id : '')) return undefined;
    return this.xattrsOf(n);
  }

  async getattr(id: bigint): Promise<VfsAttr> {
    return this.attrOf(await this.node(id));
  }

  async lookup(parentId: bigint, name: Buffer): Promise<VfsEntry> {
    const parent = await this.node(parentId);
    switch (parent.type) {
      case 'root':
      case 'source': {
        await this.fresh();
        const prefix = parent.type === 'root' ? '' : parent.prefix;
        const l = this.level(prefix);
        const s = name.toString('utf8');
        if (!Buffer.from(s, 'utf8').equals(name)) throw notFound(s);
        if (l.snapshots.length > 0) {
          if (s === 'last') {
            const n = this.lastNode(prefix);
            return { id: n.id, attr: this.lastAttr(prefix) };
          }
          const snap = l.byName.get(s);
          if (snap) {
            const n = this.snapshotNode(snap);
            return { id: n.id, attr: await this.snapshotAttr(n) };
          }
        }
        if (l.children.has(s)) {
          const childPrefix = prefix ? `${prefix}/${s}` : s;
          const n = this.sourceNode(childPrefix);
          return { id: n.id, attr: this.syntheticDirAttr(childPrefix) };
        }
        throw notFound(prefix ? `${prefix}/${s}` : s);
      }
      case 'snapshot':
      case 'entry': {
        this.snapshotLive(parent.snap);
        const dirId = this.dirTree(parent);
        const entry = await this.trees.lookup(dirId, name);
        if (!entry) throw notFound(name.toString('utf8'));
        const parentPath = parent.type === 'snapshot' ? EMPTY : parent.path;
        const parentIno = parent.type === 'snapshot' ? (await this.snapshotAttr(parent)).ino : parent.attr.ino;
        const n = this.entryNode(parent.snap, parentPath, entry, parentIno);
        return { id: n.id, attr: n.attr };
      }
      case 'last':
        throw new SnapfsError('NOT_A_DIRECTORY', 'last: not a directory');
    }
  }

  private dirTree(n: Node & { type: 'snapshot' | 'entry' }): BlobId {
    if (n.type === 'snapshot') return idFromHex(n.snap.root);
    if (n.entry.kind !== EntryKind.Directory || !n.entry.subtree) throw new SnapfsError('NOT_A_DIRECTORY', `${n.path.toString('utf8')}: not a directory`);
    return n.entry.subtree;
  }

  /**
   * Entries from `offset` on: 0 is ".", 1 is "..", then the children in name order.
   * Returns at most `max` entries; a big directory is read one tree page at a time.
   * `nodes`: for snapshot content, what a lookup of each entry gives ('all'), or of each
   * subdirectory only ('directories': a walk that lists without reading, such as find,
   * whose next listings are of these subdirectories: their trees are read ahead).
   */
  async readdir(id: bigint, offset = 0, max = 4096, opts: { nodes?: 'all' | 'directories' } = {}): Promise<VfsDirPage> {
    const n = await this.node(id);
    const out: VfsDirEntry[] = [];
    const self = await this.attrOf(n);
    let pos = offset;
    if (pos === 0 && out.length < max) {
      out.push({ name: DOT, ino: self.ino, type: S_IFDIR });
      pos = 1;
    }
    if (pos === 1 && out.length < max) {
      out.push({ name: DOTDOT, ino: await this.parentIno(n), type: S_IFDIR });
      pos = 2;
    }
    if (pos < 2) return { ino: self.ino, entries: out, next: pos };
    if (n.type === 'root' || n.type === 'source') {
      const prefix = n.type === 'root' ? '' : n.prefix;
      const names = syntheticChildren(this.level(prefix));
      for (; pos - 2 < names.length && out.length < max; pos++) {
        const c = names[pos - 2]!;
        if (c.kind === 'last') out.push({ name: Buffer.from('last'), ino: this.lastAttr(prefix).ino, type: S_IFLNK });
        else if (c.kind === 'snapshot') out.push({ name: Buffer.from(c.name), ino: inoOf(['dir', prefix, EMPTY]), type: S_IFDIR });
        else out.push({ name: Buffer.from(c.name), ino: inoOf(['source', prefix ? `${prefix}/${c.name}` : c.name]), type: S_IFDIR });
      }
      return { ino: self.ino, entries: out, next: pos - 2 < names.length ? pos : undefined };
    }
    if (n.type === 'last') throw new SnapfsError('NOT_A_DIRECTORY', 'last: not a directory');
    const dirId = this.dirTree(n);
    const parentPath = n.type === 'snapshot' ? EMPTY : n.path;
    let more = false;
    // Ids are hashes: two entries of one page may share one, and a reply that hands the
    // kernel both would make them one inode. The first keeps it; a lookup of the other
    // then meets the collision (EIO) like any other.
    const given = new Set<bigint>();
    const subdirs: TreeEntry[] = [];
    for await (const e of this.trees.entries(dirId, pos - 2)) {
      if (out.length >= max) {
        more = true;
        break;
      }
      if (opts.nodes === 'directories' && e.kind === EntryKind.Directory) subdirs.push(e);
      const path: PathRef = [parentPath, e.name];
      if (opts.nodes === 'all' || (opts.nodes === 'directories' && e.kind === EntryKind.Directory)) {
        // The same id and attributes a lookup would give, without building the node.
        const attr = this.entryAttr(n.snap, path, e);
        const nodeId = nodeIdOf(['entry', n.snap.id, path]);
        const free = !given.has(nodeId) && !this.idTakenByOther(nodeId, n.snap, parentPath, e.name);
        given.add(nodeId);
        const node = free ? { id: nodeId, attr, noXattrs: !e.xattrs?.some(shownXattr) } : undefined;
        out.push({ name: e.name, ino: attr.ino, type: TYPE_BITS[e.kind], node });
      } else out.push({ name: e.name, ino: this.entryIno(n.snap, path, e), type: TYPE_BITS[e.kind] });
      pos++;
    }
    if (subdirs.length) this.trees.prefetchIntoCache(subdirs, SUBTREES_AHEAD);
    return { ino: self.ino, entries: out, next: more ? pos : undefined };
  }

  private async parentIno(n: Node): Promise<bigint> {
    switch (n.type) {
      case 'root':
        return ROOT_ID;
      case 'source': {
        const i = n.prefix.lastIndexOf('/');
        return i < 0 ? ROOT_ID : inoOf(['source', n.prefix.slice(0, i)]);
      }
      case 'last':
        return inoOf(['source', n.source]);
      case 'snapshot':
        return inoOf(['source', n.snap.source]);
      case 'entry':
        return n.parentIno;
    }
  }

  async readlink(id: bigint): Promise<Buffer> {
    const n = await this.node(id);
    if (n.type === 'last') {
      await this.fresh();
      return Buffer.from(this.lastOf(n.source).name);
    }
    if (n.type === 'entry' && n.entry.kind === EntryKind.Symlink && n.entry.target) {
      this.snapshotLive(n.snap);
      return n.entry.target;
    }
    throw new SnapfsError('INVALID_ARGUMENT', 'not a symbolic link');
  }

  /** Opens a regular file for reading; returns a handle number (> 0). */
  async open(id: bigint, flags = 0): Promise<number> {
    if ((flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0) throw new SnapfsError('READ_ONLY', 'the snapshot file system is read-only');
    const handle = this.readState(await this.node(id));
    while (this.handles.has(this.nextHandle)) this.nextHandle = this.nextHandle >= 0x7fffffff ? 1 : this.nextHandle + 1;
    const fh = this.nextHandle;
    this.nextHandle = fh >= 0x7fffffff ? 1 : fh + 1;
    this.handles.set(fh, handle);
    return fh;
  }

  /** Fresh read state for a regular file of a live snapshot. */
  private readState(n: Node): Handle {
    if (n.type !== 'entry') throw new SnapfsError('IS_A_DIRECTORY', 'not a regular file');
    this.snapshotLive(n.snap);
    if (n.entry.kind !== EntryKind.File) throw new SnapfsError('IS_A_DIRECTORY', `${n.path.toString('utf8')}: not a regular file`);
    return { node: n, file: this.files.open(n.entry), nextOffset: 0, sequential: 0 };
  }

  /**
   * Calls `use` with up to `length` bytes at `offset`; they are valid only during the call
   * (chunk memory is reused once evicted), which must therefore copy or send them at once.
   */
  async read<T>(fh: number, offset: number, length: number, use: (data: Buffer) => T): Promise<T> {
    const h = this.handles.get(fh);
    if (!h) throw new SnapfsError('STALE_HANDLE', `file handle ${fh} is not open`);
    if (this.clashed.has(h.node.id)) throw idCollision('a read', h.node.id);
    return this.readFrom(h, offset, length, use);
  }

  /**
   * Like read, for a file the FUSE binding opened without asking (snapshot content is
   * immutable, so an open needs no check and no state): the read state is kept per node,
   * for the few files read most recently.
   */
  async readNode<T>(id: bigint, offset: number, length: number, use: (data: Buffer) => T): Promise<T> {
    if (this.clashed.has(id)) throw idCollision('a read', id);
    let h = this.nodeReads.get(id);
    if (h) {
      this.nodeReads.delete(id); // most recently used last
    } else {
      h = this.readState(await this.node(id));
      if (this.nodeReads.size >= NODE_READ_STATES) this.nodeReads.delete(this.nodeReads.keys().next().value!);
    }
    this.nodeReads.set(id, h);
    return this.readFrom(h, offset, length, use);
  }

  /** The size of regular file `id` when its node is in memory (no I/O, no await); undefined otherwise. */
  knownFileSize(id: bigint): number | undefined {
    const n = this.nodeReads.get(id)?.node ?? this.cachedNode(id);
    return n?.type === 'entry' && n.entry.kind === EntryKind.File ? n.entry.size : undefined;
  }

  /**
   * Where the chunks of a stretch of file `id` are stored, for the binding to stream it
   * (it loads and verifies them itself, with blobSecret): from the chunk holding `offset`
   * to the last one starting before `offset + bytes`, with the file's inode number (st_ino),
   * size and where the stretch ends. Only for a regular file larger than `minSize`;
   * undefined otherwise, or when the stretch is all hole.
   */
  async storedStretch(
    id: bigint,
    offset: number,
    bytes: number,
    minSize: number,
  ): Promise<{ ino: bigint; size: number; end: number; chunks: StoredChunk[] } | undefined> {
    const h = this.nodeReads.get(id);
    const n = h?.node ?? (await this.node(id));
    // The size first: most files read are small, and their chunk lists need no decoding here.
    if (n.type !== 'entry' || n.entry.kind !== EntryKind.File || n.entry.size <= minSize) return undefined;
    this.snapshotLive(n.snap);
    const file = h?.file ?? this.files.open(n.entry);
    const chunks = await this.files.storedChunks(file, offset, offset + bytes);
    const last = chunks[chunks.length - 1];
    if (!last) return undefined;
    return { ino: this.entryIno(n.snap, n.path, n.entry), size: file.size, end: last.fileOffset + last.rawLength, chunks };
  }

  /**
   * Reads ahead across files: the small regular files after file `id` in its directory, in
   * name order (the order tar, cp -a and rsync open them). `use` gets each one's node id,
   * size and where its chunks are stored (the binding reads and verifies them on threads of
   * its own, with blobSecret), and returns false to stop; files `skip` names are passed
   * over. Stops at the pass's limits.
   */
  async readFilesAfter(
    id: bigint,
    pass: FilesAhead,
  ): Promise<void> {
    const n = this.cachedNode(id);
    if (n?.type !== 'entry') return;
    this.snapshotLive(n.snap);
    const slash = n.path.lastIndexOf(0x2f);
    const parentPath = slash < 0 ? EMPTY : n.path.subarray(0, slash);
    const dirId = await this.dirTreeAt(n.snap, parentPath);
    if (!dirId) return;
    const start = await this.trees.positionAfter(dirId, n.path.subarray(slash + 1));
    await this.readFilesFrom(n.snap, parentPath, dirId, start, pass);
  }

  /** Like readFilesAfter, from the first file of directory `dirId` (a snapshot's or one in it). */
  async readFilesIn(
    dirId: bigint,
    pass: FilesAhead,
  ): Promise<void> {
    const n = this.cachedNode(dirId);
    if (n?.type === 'snapshot') {
      this.snapshotLive(n.snap);
      await this.readFilesFrom(n.snap, EMPTY, idFromHex(n.snap.root), 0, pass);
    } else if (n?.type === 'entry' && n.entry.kind === EntryKind.Directory && n.entry.subtree) {
      this.snapshotLive(n.snap);
      await this.readFilesFrom(n.snap, n.path, n.entry.subtree, 0, pass);
    }
  }

  private async readFilesFrom(
    snap: SnapshotRecord,
    parentPath: Buffer,
    dirId: BlobId,
    start: number,
    pass: FilesAhead,
  ): Promise<void> {
    const { limits, skip, use } = pass;
    let files = 0;
    let bytes = 0;
    let seen = 0;
    for await (const e of this.trees.entries(dirId, start)) {
      if (++seen > limits.entries || files >= limits.files || bytes >= limits.bytes) break;
      if (e.kind !== EntryKind.File || e.size === 0 || e.size > limits.fileBytes) continue;
      const fileId = nodeIdOf(['entry', snap.id, [parentPath, e.name]]);
      if (skip(fileId) || this.idTakenByOther(fileId, snap, parentPath, e.name)) continue;
      const size = e.size;
      let chunks: StoredChunk[];
      try {
        chunks = await this.files.storedChunks(this.files.open(e));
      } catch {
        continue; // damaged or missing: the reader of that file gets the error itself
      }
      if (chunks.length === 0) continue; // all hole: nothing to assemble, reads cost nothing
      if (!use(fileId, this.entryIno(snap, [parentPath, e.name], e), size, chunks)) break;
      files++;
      bytes += size;
      // Let the requests that came meanwhile in: the reader may already want one of these.
      if (files % YIELD_EVERY_FILES === 0) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  private readFrom<T>(h: Handle, offset: number, length: number, use: (data: Buffer) => T): Promise<T> {
    if (offset === h.nextOffset) h.sequential++;
    else h.sequential = 0;
    h.nextOffset = offset + length;
    const data = this.files.readWith(h.file, offset, length, use);
    // Read ahead once the pattern looks sequential: the next chunks decompress while the
    // reader consumes this one.
    if (h.sequential >= 2 && offset + length < h.file.size) this.files.prefetch(h.file, offset + length, this.opts.readAheadChunks ?? 4);
    return data;
  }

  release(fh: number): void {
    this.handles.delete(fh);
  }

  get openFiles(): number {
    return this.handles.size;
  }

  async statfs(): Promise<VfsStatfs> {
    const now = Date.now();
    if (!this.statfsCache || now - this.statfsCache.at > 10_000) {
      let bytes = 0;
      for (const p of this.repo.index.allPacks()) bytes += p.size;
      this.statfsCache = { at: now, bytes };
    }
    return { bytes: this.statfsCache.bytes, snapshots: this.state.count, nameMax: 255 };
  }

  /** Stored extended attributes in XATTR_NAMESPACES only. */
  private xattrsOf(n: Node): Array<[Buffer, Buffer]> {
    if (n.type !== 'entry') return [];
    this.snapshotLive(n.snap);
    return (n.entry.xattrs ?? []).filter(shownXattr);
  }

  async listxattr(id: bigint): Promise<Buffer[]> {
    return this.xattrsOf(await this.node(id)).map(([k]) => k);
  }

  /** The value, or undefined when the entry has no such attribute. */
  async getxattr(id: bigint, name: Buffer): Promise<Buffer | undefined> {
    return this.xattrsOf(await this.node(id)).find(([k]) => k.equals(name))?.[1];
  }
}

const EMPTY = Buffer.alloc(0);
const DOT = Buffer.from('.');
/** Subtrees of a directory listed by a walk that does not read (find) read ahead, at most, per listing page. */
const SUBTREES_AHEAD = 32;
const DOTDOT = Buffer.from('..');
const XATTR_PREFIXES = XATTR_NAMESPACES.map((p) => Buffer.from(p));

function shownXattr([k]: [Buffer, Buffer]): boolean {
  return isShownXattrName(k);
}

/**
 * Whether an xattr name lies in a namespace the mount shows. Names outside them (security.*,
 * system.posix_acl_*) are answered "not supported", not "no such attribute": ls caches that
 * answer per device and stops asking for every file.
 */
export function isShownXattrName(name: Buffer): boolean {
  return XATTR_PREFIXES.some((p) => name.subarray(0, p.length).equals(p));
}

/** Whether `path` is parent + '/' + name (just name at a snapshot's root). */
function isChildPath(path: Buffer, parent: Buffer, name: Buffer): boolean {
  if (parent.length === 0) return path.equals(name);
  return path.length === parent.length + 1 + name.length && path[parent.length] === 0x2f &&
    path.subarray(0, parent.length).equals(parent) && path.subarray(parent.length + 1).equals(name);
}

/**
 * A node's path and entry in one exact-size buffer of their own. A decoded entry's bytes
 * are views into its tree page, and a small Buffer.concat lands in a shared 8 KiB pool
 * slab: a node kept for long (the kernel pins every name it holds) would keep the whole
 * page or slab alive, which made the mount's memory grow with the files it had seen.
 */
function detachEntry(parentPath: Buffer, e: TreeEntry): { path: Buffer; entry: TreeEntry } {
  const prefix = parentPath.length ? parentPath.length + 1 : 0;
  let size = prefix + e.name.length + (e.target?.length ?? 0) + (e.content?.length ?? 0) + (e.subtree?.length ?? 0);
  for (const [k, v] of e.xattrs ?? []) size += k.length + v.length;
  const buf = Buffer.allocUnsafeSlow(size);
  let at = 0;
  const take = (b: Buffer): Buffer => {
    b.copy(buf, at);
    at += b.length;
    return buf.subarray(at - b.length, at);
  };
  if (prefix) {
    take(parentPath);
    buf[at++] = 0x2f;
  }
  const entry: TreeEntry = { ...e, name: take(e.name) };
  const path = buf.subarray(0, at);
  if (e.target) entry.target = take(e.target);
  if (e.content) entry.content = take(e.content);
  if (e.subtree) entry.subtree = take(e.subtree);
  if (e.xattrs) entry.xattrs = e.xattrs.map(([k, v]) => [take(k), take(v)]);
  return { path, entry };
}

function buildState(records: SnapshotRecord[], ids: Set<string>): CatalogState {
  const levels = new Map<string, Level>();
  const level = (prefix: string): Level => {
    let l = levels.get(prefix);
    if (!l) {
      l = { prefix, children: new Set(), snapshots: [], byName: new Map(), newestNs: 0n };
      levels.set(prefix, l);
    }
    return l;
  };
  level('');
  // Records come sorted oldest to newest (time, then publication): the last is `last`.
  for (const r of records) {
    const parts = r.source.split('/');
    const pub = publishedAtNs(r);
    for (let i = 0; i <= parts.length; i++) {
      const l = level(parts.slice(0, i).join('/'));
      if (i < parts.length) l.children.add(parts[i]!);
      if (pub > l.newestNs) l.newestNs = pub;
    }
    const own = level(r.source);
    if (!own.byName.has(r.name)) {
      own.byName.set(r.name, r);
      own.snapshots.push(r);
    }
  }
  return { ids, levels, count: records.length };
}

type SyntheticChild = { kind: 'source' | 'snapshot' | 'last'; name: string };

function syntheticChildren(l: Level): SyntheticChild[] {
  const out: SyntheticChild[] = [...l.children].map((name) => ({ kind: 'source' as const, name }));
  for (const s of l.snapshots) out.push({ kind: 'snapshot', name: s.name });
  if (l.snapshots.length > 0) out.push({ kind: 'last', name: 'last' });
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
