// Tree format (version 1): one directory = one tree. Entries are sorted by name as raw
// bytes. A directory's tree is either a single leaf page of entries or, for big
// directories, an index node that lists leaf pages by their first name. Pages are cut
// at content-defined points (a hash of the entry name), so adding one message to a
// mailbox folder of 100,000 rewrites one page and the index, not the whole listing.

import { BinaryReader, BinaryWriter } from './binary.js';
import { BLOB_ID_BYTES, BlobId, hash32 } from './blob-id.js';
import { CorruptDataError } from '../errors.js';

export const TREE_FORMAT_VERSION = 1;

export enum EntryKind {
  File = 1,
  Directory = 2,
  Symlink = 3,
  Fifo = 4,
  CharDevice = 5,
  BlockDevice = 6,
  Socket = 7,
}

/**
 * One directory entry. `since` is the generation (see SnapshotRecord.generations) of the
 * first snapshot that stored this exact version; it is carried forward while unchanged.
 */
export interface TreeEntry {
  name: Buffer;
  kind: EntryKind;
  /** Permission bits including setuid/setgid/sticky (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Bytes the source file had allocated (st_blocks * 512): tells a sparse file. */
  allocated: number;
  mtimeNs: bigint;
  /** The source's ctime: used only to detect change, never shown. */
  ctimeNs: bigint;
  inode: bigint;
  device: number;
  nlink: number;
  rdev: number;
  since: number;
  target?: Buffer;
  xattrs?: Array<[Buffer, Buffer]>;
  /** Files: encoded chunk list (decode with decodeChunkList). */
  content?: Buffer;
  /** Directories: id of the subtree. */
  subtree?: BlobId;
}

/** A file's chunks with cumulative offsets; gaps between chunks are holes (zeros). */
export interface ChunkList {
  count: number;
  offsets: Float64Array;
  lengths: Uint32Array;
  /** count * 16 bytes of blob ids. */
  ids: Buffer;
}

export interface ChunkRef {
  offset: number;
  length: number;
  id: BlobId;
}

const MAX_NAME = 4096;
const MAX_TARGET = 65536;
const MAX_XATTRS = 4096;
const MAX_XATTR_VALUE = 1 << 20;
const MAX_CHUNKS = 1 << 24;
const MAX_ENTRIES_PER_NODE = 1 << 24;

export function chunkId(list: ChunkList, i: number): BlobId {
  return list.ids.subarray(i * BLOB_ID_BYTES, (i + 1) * BLOB_ID_BYTES);
}

export function encodeChunkList(chunks: readonly ChunkRef[]): Buffer {
  const w = new BinaryWriter(8 + chunks.length * 24);
  w.varint(chunks.length);
  let end = 0;
  for (const c of chunks) {
    if (c.offset < end) throw new RangeError('chunk list must be sorted and non-overlapping');
    w.varint(c.offset - end).varint(c.length).bytes(c.id);
    end = c.offset + c.length;
  }
  return w.finish();
}

export function decodeChunkList(buf: Buffer, fileSize: number): ChunkList {
  const r = new BinaryReader(buf, 0, buf.length, 'chunk list');
  const count = r.count(MAX_CHUNKS, 'chunk count');
  // Each chunk takes at least 18 bytes (two one-byte varints and its id): a count the
  // buffer cannot hold is damage, found before allocating arrays for it (up to 448 MiB).
  if (count * (2 + BLOB_ID_BYTES) > r.remaining) throw new CorruptDataError(`chunk list: ${count} chunks cannot fit in ${r.remaining} bytes`);
  const offsets = new Float64Array(count);
  const lengths = new Uint32Array(count);
  const ids = Buffer.allocUnsafe(count * BLOB_ID_BYTES);
  let end = 0;
  for (let i = 0; i < count; i++) {
    const offset = end + r.varint();
    const length = r.varint();
    if (length === 0 || length > 0xffffffff) throw new CorruptDataError('chunk list: bad chunk length');
    r.bytes(BLOB_ID_BYTES).copy(ids, i * BLOB_ID_BYTES);
    offsets[i] = offset;
    lengths[i] = length;
    end = offset + length;
  }
  r.expectEnd();
  if (end > fileSize) throw new CorruptDataError('chunk list: chunks extend past the file size');
  return { count, offsets, lengths, ids };
}

/** Index of the chunk containing `pos`, or -1 when `pos` falls in a hole. */
export function findChunk(list: ChunkList, pos: number): number {
  let lo = 0;
  let hi = list.count - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const start = list.offsets[mid]!;
    if (pos < start) hi = mid - 1;
    else if (pos >= start + list.lengths[mid]!) lo = mid + 1;
    else return mid;
  }
  return -1;
}

const FLAG_TARGET = 1;
const FLAG_XATTRS = 2;
const FLAG_CONTENT = 4;
const FLAG_SUBTREE = 8;

export function encodeEntry(w: BinaryWriter, e: TreeEntry): void {
  let flags = 0;
  if (e.target) flags |= FLAG_TARGET;
  if (e.xattrs && e.xattrs.length > 0) flags |= FLAG_XATTRS;
  if (e.content) flags |= FLAG_CONTENT;
  if (e.subtree) flags |= FLAG_SUBTREE;
  w.lbytes(e.name).u8(e.kind).u8(flags);
  w.varint(e.mode).varint(e.uid).varint(e.gid).varint(e.size).varint(e.allocated);
  w.i64(e.mtimeNs).i64(e.ctimeNs).u64(e.inode);
  w.varint(e.device).varint(e.nlink).varint(e.rdev).varint(e.since);
  if (e.target) w.lbytes(e.target);
  if (e.xattrs && e.xattrs.length > 0) {
    w.varint(e.xattrs.length);
    for (const [k, v] of e.xattrs) w.lbytes(k).lbytes(v);
  }
  if (e.content) w.lbytes(e.content);
  if (e.subtree) w.bytes(e.subtree);
}

export function decodeEntry(r: BinaryReader): TreeEntry {
  const name = r.lbytes(MAX_NAME, 'name length');
  // A name must be one path component: restore and the mount rely on it.
  if (name.length === 0 || name.includes(0x2f) || name.includes(0) || (name.length <= 2 && /^\.\.?$/.test(name.toString('latin1')))) {
    throw new CorruptDataError('tree: invalid entry name');
  }
  const kind = r.u8();
  if (kind < EntryKind.File || kind > EntryKind.Socket) throw new CorruptDataError(`tree: unknown entry kind ${kind}`);
  const flags = r.u8();
  const e: TreeEntry = {
    name,
    kind,
    mode: r.varint(),
    uid: r.varint(),
    gid: r.varint(),
    size: r.varint(),
    allocated: r.varint(),
    mtimeNs: r.i64(),
    ctimeNs: r.i64(),
    inode: r.u64(),
    device: r.varint(),
    nlink: r.varint(),
    rdev: r.varint(),
    since: r.varint(),
  };
  if (e.mode > 0o7777) throw new CorruptDataError('tree: invalid mode');
  if (flags & FLAG_TARGET) e.target = r.lbytes(MAX_TARGET, 'symlink target');
  if (flags & FLAG_XATTRS) {
    const n = r.count(MAX_XATTRS, 'xattr count');
    e.xattrs = [];
    for (let i = 0; i < n; i++) e.xattrs.push([r.lbytes(MAX_NAME, 'xattr name'), r.lbytes(MAX_XATTR_VALUE, 'xattr value')]);
  }
  if (flags & FLAG_CONTENT) e.content = r.lbytes(MAX_CHUNKS * 40, 'chunk list');
  if (flags & FLAG_SUBTREE) e.subtree = r.bytes(BLOB_ID_BYTES);
  if ((e.kind === EntryKind.Directory) !== (e.subtree !== undefined)) throw new CorruptDataError('tree: directory without subtree');
  if (e.kind === EntryKind.File && !e.content) throw new CorruptDataError('tree: file without chunk list');
  return e;
}

export function compareNames(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

// --- nodes -------------------------------------------------------------------------

const NODE_LEAF = 1;
const NODE_INDEX = 2;

export interface PageRef {
  firstName: Buffer;
  count: number;
  id: BlobId;
}

export type TreeNode = { kind: 'leaf'; entries: TreeEntry[] } | { kind: 'index'; pages: PageRef[]; total: number };

export function encodeLeaf(entries: readonly TreeEntry[]): Buffer {
  const w = new BinaryWriter(64 + entries.length * 96);
  w.u8(TREE_FORMAT_VERSION).u8(NODE_LEAF).varint(entries.length);
  for (const e of entries) encodeEntry(w, e);
  return w.finish();
}

export function encodeIndex(pages: readonly PageRef[]): Buffer {
  const w = new BinaryWriter(64 + pages.length * 48);
  w.u8(TREE_FORMAT_VERSION).u8(NODE_INDEX).varint(pages.length);
  for (const p of pages) w.lbytes(p.firstName).varint(p.count).bytes(p.id);
  return w.finish();
}

export function decodeTreeNode(buf: Buffer): TreeNode {
  const r = new BinaryReader(buf, 0, buf.length, 'tree');
  const version = r.u8();
  if (version !== TREE_FORMAT_VERSION) throw new CorruptDataError(`tree: unsupported format version ${version}`);
  const kind = r.u8();
  if (kind === NODE_LEAF) {
    const n = r.count(MAX_ENTRIES_PER_NODE, 'entry count');
    const entries: TreeEntry[] = [];
    let prev: Buffer | undefined;
    for (let i = 0; i < n; i++) {
      const e = decodeEntry(r);
      if (prev && compareNames(prev, e.name) >= 0) throw new CorruptDataError('tree: entries not sorted or duplicated');
      prev = e.name;
      entries.push(e);
    }
    r.expectEnd();
    return { kind: 'leaf', entries };
  }
  if (kind === NODE_INDEX) {
    const n = r.count(MAX_ENTRIES_PER_NODE, 'page count');
    const pages: PageRef[] = [];
    let total = 0;
    for (let i = 0; i < n; i++) {
      const firstName = r.lbytes(MAX_NAME, 'page name');
      const count = r.varint();
      const id = r.bytes(BLOB_ID_BYTES);
      if (i > 0 && compareNames(pages[i - 1]!.firstName, firstName) >= 0) throw new CorruptDataError('tree: index pages not sorted');
      pages.push({ firstName, count, id });
      total += count;
    }
    r.expectEnd();
    return { kind: 'index', pages, total };
  }
  throw new CorruptDataError(`tree: unknown node kind ${kind}`);
}

// --- paging ------------------------------------------------------------------------

/** A page is never cut before this many bytes... */
export const PAGE_MIN_BYTES = 16 * 1024;
/** ...and always cut after this many, whatever the names. */
export const PAGE_MAX_BYTES = 1024 * 1024;
/** After the minimum, cut after a name whose hash has these low bits clear (~1 in 64). */
const PAGE_CUT_MASK = 63;

export interface TreePage {
  firstName: Buffer;
  count: number;
  bytes: Buffer;
}

/**
 * Cuts entries, given in name order, into encoded pages as they come. The cut after an
 * entry depends only on its name and the bytes since the previous cut, so an insertion
 * disturbs one page.
 */
export class PageCutter {
  /** Made with the page's first entry: a directory reused whole never needs one. */
  private w: BinaryWriter | undefined;
  private count = 0;
  private firstName: Buffer = Buffer.alloc(0); // the empty directory's one page
  private lastName: Buffer | undefined;
  private pagesCut = 0;

  /** Adds the next entry; returns the page it completes, if it completes one. */
  add(e: TreeEntry): TreePage | undefined {
    // A tree out of order would be unreadable (lookups are binary searches): never write one.
    if (this.lastName && compareNames(this.lastName, e.name) >= 0) throw new CorruptDataError('tree: entries not sorted or duplicated');
    this.lastName = e.name;
    if (this.count === 0) this.firstName = e.name;
    const w = (this.w ??= new BinaryWriter(PAGE_MIN_BYTES * 2));
    encodeEntry(w, e);
    this.count++;
    const size = w.length;
    if (size >= PAGE_MAX_BYTES || (size >= PAGE_MIN_BYTES && (hash32(e.name) & PAGE_CUT_MASK) === 0)) return this.cut();
    return undefined;
  }

  /** The last page: what is left, or the one empty page of an empty directory. */
  finish(): TreePage | undefined {
    return this.count > 0 || this.pagesCut === 0 ? this.cut() : undefined;
  }

  private cut(): TreePage {
    const header = new BinaryWriter(16).u8(TREE_FORMAT_VERSION).u8(NODE_LEAF).varint(this.count).finish();
    const page = { firstName: this.firstName, count: this.count, bytes: Buffer.concat([header, this.w?.finish() ?? Buffer.alloc(0)]) };
    this.w = undefined;
    this.count = 0;
    this.pagesCut++;
    return page;
  }
}

/** Splits sorted entries into encoded pages (see PageCutter). */
export function paginate(entries: readonly TreeEntry[]): TreePage[] {
  const cutter = new PageCutter();
  const pages: TreePage[] = [];
  for (const e of entries) {
    const page = cutter.add(e);
    if (page) pages.push(page);
  }
  const last = cutter.finish();
  if (last) pages.push(last);
  return pages;
}

/** Metadata-equality used to decide that an entry is unchanged (everything but `since`). */
export function sameVersion(a: TreeEntry, b: TreeEntry): boolean {
  return (
    a.kind === b.kind &&
    a.mode === b.mode &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.size === b.size &&
    a.allocated === b.allocated &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs &&
    a.inode === b.inode &&
    a.device === b.device &&
    a.nlink === b.nlink &&
    a.rdev === b.rdev &&
    optEqual(a.target, b.target) &&
    optEqual(a.content, b.content) &&
    optEqual(a.subtree, b.subtree) &&
    xattrsEqual(a.xattrs, b.xattrs)
  );
}

function optEqual(a: Buffer | undefined, b: Buffer | undefined): boolean {
  if (!a || !b) return a === b;
  return a.equals(b);
}

function xattrsEqual(a: Array<[Buffer, Buffer]> | undefined, b: Array<[Buffer, Buffer]> | undefined): boolean {
  const x = a ?? [];
  const y = b ?? [];
  if (x.length !== y.length) return false;
  return x.every(([k, v], i) => k.equals(y[i]![0]) && v.equals(y[i]![1]));
}
