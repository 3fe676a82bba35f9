/**
 * Typed loader for the snapfs N-API addon (native/src/*.c).
 *
 * Paths are raw bytes: file names on Linux need not be UTF-8, so every path
 * parameter takes a Buffer (a string is encoded as UTF-8). Failing syscalls
 * throw Node-style errors: `code` ('ENOENT', ...), `errno` (negative, like
 * Node's fs), `syscall` and, for path calls, `path`. Bad arguments throw
 * TypeError.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type PathLike = Buffer | string;

export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
}

export interface ScannedEntry {
  name: Buffer;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  ino: bigint;
  size: number;
  /** 512-byte units */
  blocks: number;
  rdev: number;
  dev: number;
  /** 0 from scanDir, which leaves atime out (see native/src/scandir.c) */
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** errno of the entry's lstat (0 = ok); on failure the other fields are 0 */
  errno: number;
}

interface Binding {
  cdcCuts(data: Uint8Array, start: number, end: number, eof: boolean, gear: Uint8Array,
    minSize: number, avgSize: number, maxSize: number): Uint32Array;
  dataRegions(fd: number, size: number): number[];
  flock(fd: number, exclusive: boolean, nonBlocking: boolean): boolean;
  funlock(fd: number): void;
  listXattrs(path: PathLike): Array<[Buffer, Buffer]>;
  setXattr(path: PathLike, name: PathLike, value: Uint8Array): void;
  mknod(path: PathLike, mode: number, rdev: number): void;
  utimensNoFollow(path: PathLike, atimeSec: number, atimeNsec: number,
    mtimeSec: number, mtimeNsec: number): void;
  scanDir(path: PathLike): Promise<Buffer>;
  scanDirs(paths: Buffer[], budgetBytes: number): Promise<Array<Buffer | Error | null>>;
  readSmallFiles(paths: Buffer[], maxBytes: number): Promise<Array<Buffer | Error>>;
  setMmapThreshold(bytes: number): boolean;
  trimMalloc(): boolean;
  setTrimThreshold(bytes: number): boolean;
  preadCached(fd: number, buf: Uint8Array, offset: number): number;
  dropCachedPages(fd: number): boolean;
  zstdDecompress(frame: Uint8Array, out: Uint8Array): Promise<number>;
  newFile(dir: PathLike, name: PathLike, parts: Uint8Array[], offsets: number[], size: number, uid: number, gid: number,
    mode: number, mtimeSec: number, mtimeNsec: number, chown: boolean): Promise<void>;
}

/** Directory of the snapfs package, found by walking up from this module (it
 * runs both from lib/ via ts tooling and from dist/lib/ after tsc). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'snapfs') return dir;
      } catch {
        // unreadable or invalid package.json: keep walking
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`snapfs: cannot find project root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

let binding: Binding | undefined;

/** Loaded lazily so modules importing this one work without the addon until
 * a native function is actually called. */
function native(): Binding {
  if (binding) return binding;
  const file = join(projectRoot(), 'native', 'build', 'Release', 'snapfs_native.node');
  try {
    binding = createRequire(import.meta.url)(file) as Binding;
  } catch (err) {
    throw new Error(`snapfs: cannot load native addon ${file} (build it with \`npm install\` ` +
      `or \`npx node-gyp rebuild --directory native\`): ${(err as Error).message}`, { cause: err });
  }
  return binding;
}

const toBuf = (p: PathLike): Buffer => (typeof p === 'string' ? Buffer.from(p) : p);

/**
 * FastCDC cut points for data[start, end): absolute, exclusive end offsets of
 * consecutive chunks beginning at `start`. Without `eof`, an unfinished tail
 * (after the last returned cut, or `start` if none) is left for the caller to
 * pass again with more data; results do not depend on how input is split.
 * `gear` is 256 little-endian u64 (2048 bytes); avgSize must be a power of two
 * and minSize <= avgSize <= maxSize. data must be < 4 GiB.
 */
export function cdcCuts(data: Uint8Array, start: number, end: number, eof: boolean, gear: Uint8Array,
  minSize: number, avgSize: number, maxSize: number): Uint32Array {
  return native().cdcCuts(data, start, end, eof, gear, minSize, avgSize, maxSize);
}

/** Data (non-hole) regions of an open file as flat [start0, end0, start1, end1, ...],
 * clamped to `size`. Filesystems without SEEK_DATA give [0, size]. The fd's
 * file offset is preserved. */
export function dataRegions(fd: number, size: number): number[] {
  return native().dataRegions(fd, size);
}

/** flock(2). Returns false only when nonBlocking and the lock is held elsewhere.
 * A blocking call blocks the whole JS thread until the lock is granted. */
export function flock(fd: number, exclusive: boolean, nonBlocking: boolean): boolean {
  return native().flock(fd, exclusive, nonBlocking);
}

export function funlock(fd: number): void {
  native().funlock(fd);
}

/** All extended attributes [name, value] of path, not following symlinks.
 * Filesystems without xattr support give []. */
export function listXattrs(path: PathLike): Array<[Buffer, Buffer]> {
  return native().listXattrs(toBuf(path));
}

/** lsetxattr(2) (create or replace). */
export function setXattr(path: PathLike, name: PathLike, value: Uint8Array): void {
  native().setXattr(toBuf(path), toBuf(name), value);
}

/** mknod(2): mode includes the file type bits (S_IFIFO, S_IFCHR, ...); the
 * permission bits are subject to the umask. rdev is the raw dev_t as in
 * stat's rdev. */
export function mknod(path: PathLike, mode: number, rdev: number): void {
  native().mknod(toBuf(path), mode, rdev);
}

/** utimensat(AT_FDCWD, path, [atime, mtime], AT_SYMLINK_NOFOLLOW). Seconds
 * may be negative; nanoseconds are in [0, 1e9). */
export function utimensNoFollow(path: PathLike, atimeSec: number, atimeNsec: number,
  mtimeSec: number, mtimeNsec: number): void {
  native().utimensNoFollow(toBuf(path), atimeSec, atimeNsec, mtimeSec, mtimeNsec);
}

/** Reads a directory and lstats every entry (except . and ..) on the libuv
 * threadpool; resolves to packed records, see decodeScan. Entries come sorted
 * by name in Buffer.compare's order; their atime is left 0. */
export async function scanDir(path: PathLike): Promise<Buffer> {
  // async so argument errors reject like the I/O errors do
  return native().scanDir(toBuf(path));
}

/**
 * scanDir of each path, in order, all in one threadpool job (one thread wake-up and one
 * completion for a directory's children): each a listing, or the error scanDir would
 * reject with; null for those not listed once the listings took `budgetBytes` (0: no limit).
 */
export async function scanDirs(paths: PathLike[], budgetBytes = 0): Promise<Array<Buffer | Error | null>> {
  return native().scanDirs(paths.map(toBuf), budgetBytes);
}

/** Size of a scanDir record without its name bytes. */
const FIXED = 2 + 4 * 4 + 5 * 8 + 3 * 12 + 4;

const NS = 1_000_000_000n;
const U32 = 0x1_0000_0000;
const U53 = 2 ** 53;

/** A u64 read as two u32 halves: faster than BigInt, exact below 2^53. */
function u64(buf: Buffer, o: number): number {
  return buf.readUInt32LE(o) + buf.readUInt32LE(o + 4) * U32;
}

/** A time stored as i64 seconds and u32 nanoseconds, in ns. */
function time(buf: Buffer, o: number): bigint {
  const sec = buf.readUInt32LE(o) + buf.readInt32LE(o + 4) * U32;
  return BigInt(sec) * NS + BigInt(buf.readUInt32LE(o + 8));
}

/** Whether the u64 at `o` is `v`: compared as two u32 halves, exactly, without a BigInt. */
function sameU64(buf: Buffer, o: number, v: bigint): boolean {
  const n = Number(v); // exact when below 2^53, where it is compared in full below
  if (n < U53) return n === u64(buf, o);
  return buf.readBigUInt64LE(o) === v;
}

/** Whether the time at `o` is `ns` exactly (a few small BigInts: cheap beside the rest). */
function sameTime(buf: Buffer, o: number, ns: bigint): boolean {
  return time(buf, o) === ns;
}

/** The fixed stat fields at `q` (the layout scanDir and readSmallFile share). */
function decodeStat(buf: Buffer, q: number): Omit<ScannedEntry, 'name' | 'errno'> {
  return {
    mode: buf.readUInt32LE(q),
    uid: buf.readUInt32LE(q + 4),
    gid: buf.readUInt32LE(q + 8),
    nlink: buf.readUInt32LE(q + 12),
    ino: buf.readBigUInt64LE(q + 16),
    size: u64(buf, q + 24),
    blocks: u64(buf, q + 32),
    rdev: u64(buf, q + 40),
    dev: u64(buf, q + 48),
    atimeNs: time(buf, q + 56),
    mtimeNs: time(buf, q + 68),
    ctimeNs: time(buf, q + 80),
  };
}

/** Decodes scanDir's packed records one at a time: a directory of a million entries
 * is walked without a million objects alive at once. Names are copies, not views, so
 * the big scan buffer is not kept alive by them. */
export function* scanRecords(buf: Buffer): Generator<ScannedEntry> {
  const cursor = new ScanCursor(buf);
  while (cursor.next()) yield cursor.entry();
}

/**
 * Steps through scanDir's packed records and reads single fields of the current one in
 * place: the writer compares an unchanged file with its previous version without
 * building an object (or a name copy) for it.
 */
export class ScanCursor {
  /** The current record's name is buf[nameStart, nameEnd); its fixed fields follow. */
  nameStart = 0;
  nameEnd = 0;
  private following = 0;

  constructor(readonly buf: Buffer) {}

  /** Moves to the next record; false after the last. */
  next(): boolean {
    const buf = this.buf;
    const p = this.following;
    if (p >= buf.length) return false;
    if (p + 2 > buf.length) throw new RangeError('decodeScan: truncated record');
    const nameLen = buf.readUInt16LE(p);
    if (p + FIXED + nameLen > buf.length) throw new RangeError('decodeScan: truncated record');
    this.nameStart = p + 2;
    this.nameEnd = p + 2 + nameLen;
    this.following = p + FIXED + nameLen;
    return true;
  }

  /** The whole current record, its name copied. */
  entry(): ScannedEntry {
    const q = this.nameEnd;
    return { name: Buffer.from(this.buf.subarray(this.nameStart, q)), ...decodeStat(this.buf, q), errno: this.errno };
  }

  /** Buffer.compare(current name, name) without a copy of the current name. */
  compareName(name: Buffer): number {
    return this.buf.compare(name, 0, name.length, this.nameStart, this.nameEnd);
  }

  get mode(): number {
    return this.buf.readUInt32LE(this.nameEnd);
  }

  get size(): number {
    return u64(this.buf, this.nameEnd + 24);
  }

  get dev(): number {
    return u64(this.buf, this.nameEnd + 48);
  }

  get errno(): number {
    return this.buf.readInt32LE(this.nameEnd + 92);
  }

  /** Whether the inode number is `ino` (no BigInt made for the comparison). */
  inoIs(ino: bigint): boolean {
    return sameU64(this.buf, this.nameEnd + 16, ino);
  }

  /** Whether the mtime is `ns` exactly. */
  mtimeIs(ns: bigint): boolean {
    return sameTime(this.buf, this.nameEnd + 68, ns);
  }

  /** Whether the ctime is `ns` exactly. */
  ctimeIs(ns: bigint): boolean {
    return sameTime(this.buf, this.nameEnd + 80, ns);
  }
}

/** Decodes all of scanDir's packed records. */
export function decodeScan(buf: Buffer): ScannedEntry[] {
  return [...scanRecords(buf)];
}

export type FileStat = Omit<ScannedEntry, 'name' | 'errno'>;

export interface SmallFile {
  stat: FileStat;
  /** 'ok': `data` holds the whole file; otherwise read it another way. */
  status: 'ok' | 'too-large' | 'sparse' | 'not-regular';
  /** The file changed while it was read (size, mtime or ctime moved, or a short read). */
  changed: boolean;
  data: Buffer;
  xattrs: Array<[Buffer, Buffer]>;
}

const SMALL_STATUS = ['ok', 'too-large', 'sparse', 'not-regular'] as const;
const STAT_BYTES = 4 * 4 + 5 * 8 + 3 * 12;

/**
 * Reads whole files of at most `maxBytes`, many in one threadpool job: for each, open
 * without following symlinks (and without touching atime where allowed), fstat, read,
 * xattrs, fstat again. Larger or sparse files come back without data, to be read region
 * by region; a file that cannot be opened or read comes back as its Error.
 */
export async function readSmallFiles(paths: PathLike[], maxBytes: number): Promise<Array<SmallFile | NativeError>> {
  const results = await native().readSmallFiles(paths.map(toBuf), maxBytes);
  return results.map((r) => (r instanceof Error ? (r as NativeError) : decodeSmallFile(r)));
}

function decodeSmallFile(buf: Buffer): SmallFile {
  const stat = decodeStat(buf, 0);
  const status = SMALL_STATUS[buf.readUInt32LE(STAT_BYTES)] ?? 'not-regular';
  const changed = buf.readUInt32LE(STAT_BYTES + 4) !== 0;
  const xattrs: Array<[Buffer, Buffer]> = [];
  if (status !== 'ok') return { stat, status, changed, data: Buffer.alloc(0), xattrs };
  const dataLen = buf.readUInt32LE(STAT_BYTES + 8);
  let p = STAT_BYTES + 12;
  const data = buf.subarray(p, p + dataLen);
  p += dataLen;
  const count = buf.readUInt32LE(p);
  p += 4;
  for (let i = 0; i < count; i++) {
    const nl = buf.readUInt32LE(p);
    const name = Buffer.from(buf.subarray(p + 4, p + 4 + nl));
    p += 4 + nl;
    const vl = buf.readUInt32LE(p);
    xattrs.push([name, Buffer.from(buf.subarray(p + 4, p + 4 + vl))]);
    p += 4 + vl;
  }
  return { stat, status, changed, data, xattrs };
}

/**
 * Makes malloc serve blocks of `bytes` and more with their own mappings, returned to the
 * kernel when freed, instead of letting glibc raise that threshold as large blocks come
 * and go (see native/src/malloc.c). Process-wide; false where the C library is not glibc.
 */
export function setMmapThreshold(bytes: number): boolean {
  return native().setMmapThreshold(bytes);
}

/**
 * Free memory at the top of a C heap kept for reuse before it goes back to the kernel
 * (glibc's M_TRIM_THRESHOLD, 128 KiB by default). Process-wide; false where the C library
 * is not glibc.
 */
export function setTrimThreshold(bytes: number): boolean {
  return native().setTrimThreshold(bytes);
}

/**
 * Returns the C heap's free pages to the kernel (glibc's malloc_trim(0)); true when some
 * were released. False where the C library is not glibc.
 */
export function trimMalloc(): boolean {
  return native().trimMalloc();
}

/**
 * Reads into `buf` at `offset` only what the page cache already holds (preadv2 with
 * RWF_NOWAIT): the bytes read, possibly fewer than asked, or -1 when that would mean
 * waiting for the disk (or the kernel cannot say). Synchronous, so it costs microseconds
 * where an fs.read costs a thread-pool round trip.
 */
export function preadCached(fd: number, buf: Uint8Array, offset: number): number {
  return native().preadCached(fd, buf, offset);
}

/**
 * Asks the kernel to drop the file's clean pages from the page cache (posix_fadvise
 * DONTNEED; written pages must be synced first to go). Advice: false where the kernel did
 * not take it; throws EBADF for a bad descriptor.
 */
export function dropCachedPages(fd: number): boolean {
  return native().dropCachedPages(fd);
}

/** What newFile writes: data at offsets (gaps are holes), then size, owner, mode, times. */
export interface NewFile {
  parts: Uint8Array[];
  offsets: number[];
  size: number;
  uid: number;
  gid: number;
  /** Permission bits incl. setuid/setgid/sticky. */
  mode: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Set the owner (needs root). */
  chown: boolean;
}

/**
 * Creates `dir/name` whole, on the thread pool: written as an unnamed file (O_TMPFILE),
 * finished (size, owner, then mode, then times; atime = mtime) and only then linked in
 * under its name, which must not exist. A process that dies meanwhile leaves nothing. Fails
 * with EOPNOTSUPP where the file system cannot make unnamed files.
 */
export function newFile(dir: PathLike, name: PathLike, f: NewFile): Promise<void> {
  return native().newFile(toBuf(dir), toBuf(name), f.parts, f.offsets, f.size, f.uid, f.gid, f.mode, f.mtimeSec, f.mtimeNsec, f.chown);
}

/**
 * Decompresses one zstd frame into `out` on the thread pool; resolves to the bytes written.
 * Neither buffer may be touched until it settles. Rejects with zstd's message on a damaged
 * frame or one that does not fit.
 */
export function zstdDecompress(frame: Uint8Array, out: Uint8Array): Promise<number> {
  return native().zstdDecompress(frame, out);
}
