/**
 * Typed loader for the snapfs_fuse N-API addon (native/src/fuse_ll.c): a binding
 * to libfuse 2.9's LOW-LEVEL (inode-based) API.
 *
 * Compared with fuse-native it passes names as raw bytes (Buffer), node ids and
 * inode numbers as 64-bit bigints, times as bigint nanoseconds, and timeouts per
 * entry. libfuse is loaded at run time: the system's libfuse.so.2 if present,
 * else the copy shipped in fuse-shared-library-linux.
 *
 * Model: every request reaches a handler with a request handle; the handler
 * answers whenever it likes (synchronously or later) with exactly one reply*
 * call. Nothing waits for JS, so any number of requests can be in flight.
 *  - A second reply on the same handle throws (code ERR_FUSE_ALREADY_REPLIED);
 *    something that is not a request handle throws a TypeError.
 *  - Replies return true when the kernel took the answer, false when it was
 *    dropped: the request was interrupted (for replyOpen: then no release will
 *    follow), or the session has ended (at the end every unanswered request is
 *    answered with EIO by C, and later replies are ignored, not errors).
 *  - A handler that throws or rejects gets its request answered with the
 *    error's errno (err.code 'ENOENT' etc. or Node's negative err.errno), else
 *    EIO; config.onError sees it (default: errors without an errno code are
 *    printed to stderr).
 *  - A request handle garbage-collected without a reply is answered with EIO.
 *
 * Answered in C, without JS: forget (no reply exists; handlers.forget only
 * observes it), every write operation (EROFS), and setattr: one that sets
 * nothing but the access time is a no-op answered like getattr, anything else
 * is EROFS. Also, so that repeated questions do not each cost a trip through
 * the event loop, whatever the replies allow (see ReplyCaching,
 * replyReadlink's reuseSec and MountConfig.xattrNamespaces): getattr of
 * immutable nodes, readlink, and getxattr/listxattr that can only be ENODATA
 * or empty; with a `ref` handler, lookups of names a readdir reply listed
 * with their node (FuseDirent.node). FuseSession.dropCached() takes those
 * answers back. With a `ref` handler the binding also offers READDIRPLUS,
 * whose replies hand those nodes to the kernel with the listing: the lookups
 * do not even happen.
 */
import { createRequire } from 'node:module';
import { readdirSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { projectRoot } from './native.js';

declare const requestBrand: unique symbol;
/** Opaque request handle; valid until one reply* call consumes it. */
export interface FuseRequest {
  readonly [requestBrand]: true;
}

export interface FuseAttr {
  /** st_ino as users see it (stat, ls -i); may differ from the node id. */
  ino: bigint;
  /** File type and permission bits (S_IFREG | 0o644, ...). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Device number for character/block devices; default 0. */
  rdev?: number;
  size: number;
  /** Preferred I/O size; default 0 (the kernel then uses its own). */
  blksize?: number;
  /** 512-byte units; default ceil(size / 512). */
  blocks?: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/**
 * Facts about a node that let the binding answer later requests for its node id
 * without calling a handler. Only state what holds for as long as the node id
 * names this node (or until FuseSession.dropCached()).
 */
export interface ReplyCaching {
  /** The attributes never change: getattr is answered with them (and this reply's timeout). */
  immutable?: boolean;
  /** The node has no extended attributes: getxattr is ENODATA and listxattr empty. */
  noXattrs?: boolean;
}

export interface FuseEntry extends ReplyCaching {
  /**
   * Node id: the kernel's identity of the inode, what later requests name it
   * by. Distinct objects must have distinct node ids (two directories sharing
   * one are one inode to the kernel). 1n is the root (FUSE_ROOT_ID). For a
   * negative entry ("no such name", cached) use replyNoEntry.
   */
  ino: bigint;
  /** With ino, identifies the object for NFS export; default 0. */
  generation?: number;
  attr: FuseAttr;
  /** Seconds (fractional ok) the kernel may cache attr. */
  attrTimeout: number;
  /** Seconds (fractional ok) the kernel may cache the name -> node id binding. */
  entryTimeout: number;
}

export interface FuseDirent {
  /** Raw bytes, no '/' or NUL. */
  name: Buffer;
  /** d_ino shown by readdir (ls -i without stat): use the st_ino, not the node id. */
  ino: bigint;
  /** Only the type bits (S_IFMT) matter. */
  mode: number;
  /** Offset of the entry AFTER this one: the kernel passes it back to continue. Must be > 0. */
  nextOffset: number;
  /**
   * What a lookup of this name answers, when that never changes (immutable content):
   * the binding then answers such lookups itself and tells handlers.ref (which must
   * exist, else this is ignored). Timeout applies to the entry and the attributes.
   */
  node?: { ino: bigint; attr: FuseAttr; timeout: number; noXattrs?: boolean };
}

export interface FuseStatfs {
  bsize: number;
  /** Default bsize. */
  frsize?: number;
  blocks: number;
  bfree?: number;
  bavail?: number;
  files: number;
  ffree?: number;
  /** Default 255. */
  namemax?: number;
}

export interface OpenOptions {
  /** Keep the page cache from earlier opens (right for immutable content). */
  keepCache?: boolean;
  /** Bypass the page cache: every read(2) becomes a FUSE read. */
  directIo?: boolean;
  nonseekable?: boolean;
}

type Result = void | Promise<void>;

/**
 * Request handlers. Offsets, sizes and file handles are numbers (fh is what you
 * gave replyOpen); node ids are bigints.
 */
export interface LowLevelHandlers {
  /** Reply: replyEntry (or replyErr ENOENT, or a negative entry). */
  lookup(req: FuseRequest, parent: bigint, name: Buffer): Result;
  /** The kernel dropped nlookup references to ino. Nothing to reply. */
  forget?(ino: bigint, nlookup: number): void;
  /**
   * The kernel holds one more reference to ino (given back via forget), named `name` in
   * `parent`: the binding answered a lookup itself, from a FuseDirent.node of a readdir
   * reply, or (`fromListing`) a READDIRPLUS reply handed the node over. Always called
   * before any request about ino and before its forget.
   */
  ref?(ino: bigint, parent: bigint, name: Buffer, fromListing?: boolean): void;
  /**
   * Not a request: the binding started loading the last chunk of node `ino`'s stream
   * (FuseSession.offerStream), which ends at `end`, before the file's end; offerStream with
   * `extend` adds the next stretch before the reader gets there. Nothing to reply.
   */
  streamEnding?(ino: bigint, end: number): void;
  /** Reply: replyAttr. Also answers an atime-only setattr. */
  getattr(req: FuseRequest, ino: bigint): Result;
  /** Reply: replyReadlink. Absent: ENOSYS. */
  readlink?(req: FuseRequest, ino: bigint): Result;
  /** Reply: replyOpen. Absent: every open succeeds with fh 0. */
  open?(req: FuseRequest, ino: bigint, flags: number): Result;
  /** Reply: replyBuf with at most size bytes (fewer only at end of file). */
  read?(req: FuseRequest, ino: bigint, size: number, offset: number, fh: number): Result;
  /** Reply: replyErr(req, 0). Absent: answered by libfuse. */
  release?(req: FuseRequest, ino: bigint, fh: number): Result;
  /** Reply: replyOpen. Absent: succeeds with fh 0. */
  opendir?(req: FuseRequest, ino: bigint, flags: number): Result;
  /**
   * Reply: replyDirents (offset 0 = start; else a nextOffset you gave). Include '.' and '..' yourself.
   * `plus`: the kernel asked for READDIRPLUS (negotiated when `ref` exists): each entry sent
   * with a node is handed to the kernel as looked up, and `ref` is told of it; every entry
   * then takes at least DIRENTPLUS_MIN_BYTES of `size`.
   */
  readdir(req: FuseRequest, ino: bigint, size: number, offset: number, fh: number, plus: boolean): Result;
  /** Reply: replyErr(req, 0). */
  releasedir?(req: FuseRequest, ino: bigint, fh: number): Result;
  /** Reply: replyStatfs. Absent: libfuse's defaults. */
  statfs?(req: FuseRequest, ino: bigint): Result;
  /** size 0: replyXattrSize(value length); else replyBuf(value) or ERANGE if it exceeds size. Missing: ENODATA. */
  getxattr?(req: FuseRequest, ino: bigint, name: Buffer, size: number): Result;
  /** Names NUL-terminated and concatenated; same size protocol as getxattr. */
  listxattr?(req: FuseRequest, ino: bigint, size: number): Result;
  /** Reply: replyErr(req, 0 or EACCES). Not called with default_permissions. */
  access?(req: FuseRequest, ino: bigint, mask: number): Result;
}

export interface MountConfig {
  /** libfuse.so path tried first (also env SNAPFS_LIBFUSE). Only the first mount in a process loads it. */
  libfuse?: string;
  /** Let the kernel export this mount over NFS: lookups of '.' and '..' then reach lookup. */
  exportSupport?: boolean;
  /**
   * The only xattr name prefixes the filesystem can have (e.g. ['user.']): getxattr of
   * any other name (security.selinux, system.posix_acl_access...) is ENODATA without
   * calling the handler. Default: every name reaches the handler.
   */
  xattrNamespaces?: readonly string[];
  /** Nodes whose ReplyCaching facts and symlink targets the binding keeps; default 32768 (about 120 bytes each). */
  cacheEntries?: number;
  /**
   * offerStoredContent also pushes the file into the kernel's page cache (FUSE_NOTIFY_STORE,
   * from a thread of the binding's), so that its reads are not even sent. Default true.
   */
  pushContent?: boolean;
  /** Called for every handler that throws or rejects (after the request was answered). */
  onError?(err: unknown, op: string): void;
}

export interface UnmountOptions {
  /** MNT_DETACH: detach now; the session ends when the last user leaves (requests keep being served until then). */
  lazy?: boolean;
  /** Detach, then end the session at once: unanswered requests get EIO, processes still using the mount get ENOTCONN. */
  force?: boolean;
}

export interface FuseSession {
  /** Absolute path. */
  readonly mountpoint: string;
  /** Resolves when the session has ended, however that happened (unmount(), `umount` by someone else, ...). */
  readonly closed: Promise<void>;
  readonly isClosed: boolean;
  /**
   * Plain: umount2(mountpoint, 0), rejecting with an fs-style error (code
   * 'EBUSY' while anything uses the mount, 'EPERM' when not root); resolves
   * once the session has ended. See UnmountOptions for lazy and force.
   */
  unmount(opts?: UnmountOptions): Promise<void>;
  /** Forgets every answer given without calling a handler (ReplyCaching facts, reused link targets). */
  dropCached(): void;
  /** Requests the kernel sent so far, by name (LOOKUP, READ, OPEN...), answered here or by a handler. */
  requestCounts(): Record<string, number>;
  /**
   * Starts the threads that assemble files offerStoredContent names, verifying each chunk
   * against its id (keyed XXH3-128 with `secret`, as the store does). False when they
   * could not start.
   */
  fetchWith(secret: Uint8Array): boolean;
  /**
   * The immutable content of a file opened without a handler (fh 0), `size` bytes, which
   * the binding reads from the chunks given, decompresses and verifies on its threads
   * (fetchWith). Its reads are then answered on the libfuse thread until one reaches its
   * end (a bounded store, oldest first out); with pushContent, the kernel also gets its
   * pages (those reads are then not even sent, unless it let the pages go). A file with a
   * chunk that fails is dropped: its reads reach the handlers, which report the damage.
   * `ino`: the file's st_ino. The offer is not taken when the binding holds `node` as
   * another entry's (node ids are hashes, and may rarely come to name another entry), and
   * its bytes are served from the store under `node` only while that still holds for `ino`;
   * pushes are checked at the offer only. False when not taken.
   */
  offerStoredContent(node: bigint, ino: bigint, size: number, chunks: readonly FuseStoredChunk[]): boolean;
  /**
   * A stretch of a large file opened without a handler (fh 0), `size` bytes, being read
   * from start to end: the chunks from the reader's position on (in file order), which
   * threads of the binding's (fetchWith) load and verify a few MiB ahead of the reader, who
   * is at `reached` (the end of its latest read). Reads within the loaded window are then
   * answered on the libfuse thread; any other (before the window, past the stretch, across
   * a hole, of a chunk that failed) reaches the handlers. Replaces the node's earlier
   * stream; a few streams at a time, the one read least recently goes. When the binding
   * starts loading a stream's last chunk, the `streamEnding` handler hears of it: `extend`
   * then adds the stretch after it to the stream (not taken when there is none, or the
   * chunks do not come after it). `ino` and `node` as for offerStoredContent. False when
   * not taken.
   */
  offerStream(node: bigint, ino: bigint, size: number, reached: number, chunks: readonly FuseStoredChunk[], extend?: boolean): boolean;
  /**
   * Asks the kernel (FUSE_NOTIFY_INVAL_ENTRY, from a thread of the binding's) to drop its
   * cached entry `name` in directory node `parent` and, for a directory, every entry cached
   * below it that nothing uses, forgetting their nodes (FORGET follows). A later access
   * only looks the names up again. False when not queued (too many waiting, or the
   * session ended); the kernel answering that it had nothing cached is not an error.
   */
  invalidateEntry(parent: bigint, name: Uint8Array): boolean;
  /**
   * Whether the kernel's page cache holds node `node`'s whole content, pushed there after
   * offerStoredContent: reading it ahead again would be wasted work. A READ of such a node
   * shows the kernel let its pages go: that node is forgotten, and after many such READs
   * every node is (native/src/fuse_push.h, fp_note_read).
   */
  contentPushed(node: bigint): boolean;
}

/** Where one chunk of a file is stored (offerStoredContent, offerStream). */
export interface FuseStoredChunk {
  /** An open descriptor of the pack: the binding duplicates it at once. */
  fd: number;
  compressed: boolean;
  packOffset: number;
  storedLength: number;
  rawLength: number;
  fileOffset: number;
  /** Big-endian keyed XXH3-128 of the raw bytes. */
  id: Uint8Array;
}

/** Bytes per chunk record of offerStoredContent and offerStream (layout in native/src/fuse_ll.c). */
const STORED_CHUNK_BYTES = 48;

function encodeStoredChunks(chunks: readonly FuseStoredChunk[]): Buffer {
  const out = Buffer.alloc(chunks.length * STORED_CHUNK_BYTES);
  chunks.forEach((c, i) => {
    const at = i * STORED_CHUNK_BYTES;
    out.writeInt32LE(c.fd, at);
    out.writeUInt32LE(c.compressed ? 1 : 0, at + 4);
    out.writeBigUInt64LE(BigInt(c.packOffset), at + 8);
    out.writeUInt32LE(c.storedLength, at + 16);
    out.writeUInt32LE(c.rawLength, at + 20);
    out.writeBigUInt64LE(BigInt(c.fileOffset), at + 24);
    out.set(c.id, at + 32);
  });
  return out;
}

/** Opcode names of linux/fuse.h for requestCounts; others are shown as OP<n>. */
const KERNEL_OPCODE_NAMES: Record<number, string> = {
  1: 'LOOKUP', 2: 'FORGET', 3: 'GETATTR', 4: 'SETATTR', 5: 'READLINK', 14: 'OPEN', 15: 'READ', 17: 'STATFS',
  18: 'RELEASE', 22: 'GETXATTR', 23: 'LISTXATTR', 25: 'FLUSH', 26: 'INIT', 27: 'OPENDIR', 28: 'READDIR',
  29: 'RELEASEDIR', 34: 'ACCESS', 36: 'INTERRUPT', 42: 'BATCH_FORGET', 44: 'READDIRPLUS',
  // Not opcodes: READs the binding answered from offerStoredContent, the files it took, and of
  // those, the files the kernel took into its page cache or refused (not known).
  64: 'READ of files read ahead',
  65: 'files read ahead',
  66: 'files pushed',
  67: 'pushes refused',
  // Files offerStoredContent named that the binding assembled and verified, and dropped.
  68: 'files assembled',
  69: 'files failed to assemble',
  // READs of a file offered but not assembled yet, held until it was (or was dropped).
  70: 'READ that waited for the read-ahead',
  // invalidateEntry calls for names the kernel had cached.
  71: 'entries invalidated',
  // Of the streams of large files (offerStream): READs answered, READs that waited for a
  // chunk to load, chunks that failed their check.
  72: 'READ of streamed files',
  73: 'READ that waited for the stream',
  74: 'stream chunks failed',
  // READDIRs for the end of a directory whose last entries JS sent (replyDirents' `end`).
  75: 'READDIR of a listing\'s end',
};

interface Binding {
  load(paths: string[]): string;
  mount(mountpoint: string, options: string, handlerMask: number, exportSupport: boolean,
    xattrNamespaces: Buffer | null, cacheEntries: number, pushContent: boolean,
    dispatch: (op: number, req: FuseRequest | undefined, ino: bigint, x?: unknown, y?: unknown, z?: unknown) => void): object;
  stop(session: object): boolean;
  dropCached(session: object): void;
  requestCounts(session: object): number[];
  fetchWith(session: object, secret: Uint8Array): boolean;
  offerStoredContent(session: object, node: bigint, ino: bigint, size: number, chunks: Uint8Array): boolean;
  offerStream(session: object, node: bigint, ino: bigint, size: number, reached: number, chunks: Uint8Array, extend: boolean): boolean;
  invalidateEntry(session: object, parent: bigint, name: Uint8Array): boolean;
  contentPushed(session: object, node: bigint): boolean;
  umount(path: string, lazy: boolean): Promise<void>;
  replyErr(req: FuseRequest, errno: number): boolean;
  replyErrIfPending(req: FuseRequest, errno: number): boolean;
  replyEntry(req: FuseRequest, entry: FuseEntry | { ino: 0n; entryTimeout: number }): boolean;
  replyAttr(req: FuseRequest, attr: FuseAttr, timeout: number, cacheFlags: number): boolean;
  replyReadlink(req: FuseRequest, target: Uint8Array, reuseSec: number): boolean;
  replyOpen(req: FuseRequest, fh: number, flags: number): boolean;
  replyBuf(req: FuseRequest, data: Uint8Array): boolean;
  replyXattrSize(req: FuseRequest, size: number): boolean;
  replyStatfs(req: FuseRequest, s: FuseStatfs): boolean;
  replyDirents(req: FuseRequest, size: number, entries: readonly FuseDirent[], nodes: Uint8Array | null, dirIno: bigint | undefined): number;
}

let binding: Binding | undefined;

function native(): Binding {
  if (binding) return binding;
  const file = join(projectRoot(), 'native', 'build', 'Release', 'snapfs_fuse.node');
  try {
    binding = createRequire(import.meta.url)(file) as Binding;
  } catch (err) {
    throw new Error(`snapfs: cannot load FUSE addon ${file} (build it with \`npm install\` ` +
      `or \`npx node-gyp rebuild --directory native\`): ${(err as Error).message}`, { cause: err });
  }
  return binding;
}

/** The libfuse.so that fuse-shared-library-linux ships, or undefined if that package is absent. */
export function shippedLibfuse(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve('fuse-shared-library-linux/package.json');
    return join(dirname(pkg), 'libfuse', 'lib', 'libfuse.so');
  } catch {
    return undefined;
  }
}

/**
 * Loads libfuse 2 (once per process) and returns the path that was loaded:
 * `first` (or env SNAPFS_LIBFUSE) if given, else the system's libfuse.so.2,
 * else the shipped copy. Throws (code ERR_FUSE_NOT_LOADED) listing why each failed.
 */
export function loadLibfuse(first?: string): string {
  const paths = [first ?? process.env.SNAPFS_LIBFUSE, 'libfuse.so.2', shippedLibfuse()]
    .filter((p): p is string => !!p);
  return native().load(paths);
}

const OP = {
  LOOKUP: 0, FORGET: 1, GETATTR: 2, READLINK: 3, OPEN: 4, READ: 5, RELEASE: 6, OPENDIR: 7,
  READDIR: 8, RELEASEDIR: 9, STATFS: 10, GETXATTR: 11, LISTXATTR: 12, ACCESS: 13, REF: 14,
  READDIRPLUS: 15, STREAM_ENDING: 16, CLOSED: 31,
} as const;

const OP_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(OP).map(([k, v]) => [v, k.toLowerCase()]));

const OPTIONAL: Array<[keyof LowLevelHandlers, number]> = [
  ['forget', OP.FORGET], ['readlink', OP.READLINK], ['open', OP.OPEN], ['read', OP.READ],
  ['release', OP.RELEASE], ['opendir', OP.OPENDIR], ['readdir', OP.READDIR],
  ['releasedir', OP.RELEASEDIR], ['statfs', OP.STATFS], ['getxattr', OP.GETXATTR],
  ['listxattr', OP.LISTXATTR], ['access', OP.ACCESS], ['ref', OP.REF], ['streamEnding', OP.STREAM_ENDING],
];

/** High-level (fuse.c) options that libfuse's low-level API rejects, and what to do instead. */
const HIGH_LEVEL_ONLY: Record<string, string> = {
  noforget: 'node ids are yours: keep them stable and ignore forget (or count lookups)',
  use_ino: 'attr.ino is always used',
  readdir_ino: 'set each dirent ino',
  kernel_cache: 'replyOpen(req, fh, { keepCache: true })',
  auto_cache: 'replyOpen(req, fh, { keepCache }) per open',
  direct_io: 'replyOpen(req, fh, { directIo: true })',
  attr_timeout: 'attrTimeout per entry / replyAttr timeout',
  entry_timeout: 'entryTimeout per entry',
  negative_timeout: 'replyNoEntry(req, entryTimeout) for a cached negative entry',
  ac_attr_timeout: 'keepCache per open',
  hard_remove: 'not applicable',
  nopath: 'not applicable',
  intr: 'not applicable',
  intr_signal: 'not applicable',
  umask: 'set mode in attrs',
  uid: 'set uid in attrs',
  gid: 'set gid in attrs',
  modules: 'not supported',
};

const E = osConstants.errno as Record<string, number>;

function errnoOf(e: unknown): number | undefined {
  if (e && typeof e === 'object') {
    const { code, errno } = e as { code?: unknown; errno?: unknown };
    if (typeof code === 'string' && typeof E[code] === 'number') return E[code];
    if (typeof errno === 'number' && errno !== 0 && Math.abs(errno) < 4096) return Math.abs(errno);
  }
  return undefined;
}

function defaultOnError(err: unknown, op: string): void {
  if (errnoOf(err) === undefined) console.error(`snapfs fuse: ${op} handler failed:`, err);
}

function sysError(code: string, syscall: string, path: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${syscall} '${path}': ${code}: ${message}`),
    { code, errno: -(E[code] ?? E.EIO), syscall, path });
}

/** Refuses an unusable mountpoint with a clear error before libfuse does (it only prints to stderr). */
function checkMountpoint(mnt: string, options: readonly string[]): void {
  let st;
  try {
    st = statSync(mnt);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    if (code === 'ENOTCONN') {
      throw sysError(code, 'mount', mnt, 'a stale FUSE mount (its server died) is in the way; ' +
        'unmount it first (umount -l)');
    }
    throw sysError(code, 'mount', mnt, `cannot use the mountpoint: ${(err as Error).message}`);
  }
  if (!st.isDirectory()) throw sysError('ENOTDIR', 'mount', mnt, 'the mountpoint is not a directory');
  if (!options.includes('nonempty') && readdirSync(mnt).length > 0) {
    throw sysError('ENOTEMPTY', 'mount', mnt, "the mountpoint is not empty (libfuse 2 needs the 'nonempty' option)");
  }
}

/**
 * Mounts a read-only low-level FUSE filesystem at mountpoint and serves it on a
 * dedicated thread; requests reach `handlers` on the JS thread. options are
 * mount/libfuse options without '-o', e.g. ['ro', 'default_permissions',
 * 'fsname=snapfs', 'subtype=snapfs', 'allow_other'] (also 'debug', 'max_background=N').
 * Throws an fs-style Error (code, errno, syscall, path) on failure; libfuse may
 * print details on stderr. The session keeps the process alive until it ends;
 * if the process exits with it still mounted, the mount is lazily detached.
 */
export function mountLowLevel(mountpoint: string, options: readonly string[], handlers: LowLevelHandlers,
  config: MountConfig = {}): FuseSession {
  for (const o of options) {
    if (typeof o !== 'string' || o === '' || o.includes(',')) {
      throw new TypeError(`FUSE option ${JSON.stringify(o)}: each option must be a non-empty string without ','`);
    }
    const key = o.split('=')[0]!;
    if (Object.hasOwn(HIGH_LEVEL_ONLY, key)) {
      throw Object.assign(new Error(`FUSE option '${o}' belongs to libfuse's high-level API; ` +
        `with the low-level API: ${HIGH_LEVEL_ONLY[key]}`), { code: 'ERR_FUSE_OPTION' });
    }
  }
  for (const k of ['lookup', 'getattr', 'readdir'] as const) {
    if (typeof handlers[k] !== 'function') throw new TypeError(`handlers.${k} must be a function`);
  }
  const b = native();
  loadLibfuse(config.libfuse);
  const mnt = resolve(mountpoint);
  checkMountpoint(mnt, options);

  let mask = (1 << OP.LOOKUP) | (1 << OP.GETATTR);
  for (const [k, op] of OPTIONAL) if (typeof handlers[k] === 'function') mask |= 1 << op;

  const onError = config.onError ?? defaultOnError;
  let isClosed = false;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));

  const fail = (req: FuseRequest | undefined, op: number, err: unknown): void => {
    if (req) b.replyErrIfPending(req, errnoOf(err) ?? E.EIO!);
    try {
      onError(err, OP_NAMES[op] ?? String(op));
    } catch {
      // a failing error reporter must not take the mount down
    }
  };

  const h = handlers;
  /** `count` records of node u64, parent u64, name length u32, name (see fuse_ll.c). */
  const refs = (count: bigint, buf: Buffer): void => {
    let at = 0;
    for (let i = 0n; i < count && at + 20 <= buf.length; i++) {
      const len = buf.readUInt32LE(at + 16);
      h.ref!(buf.readBigUInt64LE(at), buf.readBigUInt64LE(at + 8), buf.subarray(at + 20, at + 20 + len));
      at += 20 + len;
    }
  };
  const dispatch = (op: number, req: FuseRequest | undefined, ino: bigint, x?: unknown, y?: unknown, z?: unknown): void => {
    let r: Result;
    try {
      switch (op) {
        case OP.LOOKUP: r = h.lookup(req!, ino, x as Buffer); break;
        case OP.FORGET: h.forget?.(ino, x as number); return;
        case OP.REF: refs(ino, x as Buffer); return;
        case OP.STREAM_ENDING: h.streamEnding?.(ino, x as number); return;
        case OP.GETATTR: r = h.getattr(req!, ino); break;
        case OP.READLINK: r = h.readlink!(req!, ino); break;
        case OP.OPEN: r = h.open!(req!, ino, x as number); break;
        case OP.READ: r = h.read!(req!, ino, x as number, y as number, z as number); break;
        case OP.RELEASE: r = h.release!(req!, ino, x as number); break;
        case OP.OPENDIR: r = h.opendir!(req!, ino, x as number); break;
        case OP.READDIR: r = h.readdir(req!, ino, x as number, y as number, z as number, false); break;
        case OP.READDIRPLUS:
          plusListings.set(req!, { parent: ino, ref: h.ref! });
          r = h.readdir(req!, ino, x as number, y as number, z as number, true);
          break;
        case OP.RELEASEDIR: r = h.releasedir!(req!, ino, x as number); break;
        case OP.STATFS: r = h.statfs!(req!, ino); break;
        case OP.GETXATTR: r = h.getxattr!(req!, ino, x as Buffer, y as number); break;
        case OP.LISTXATTR: r = h.listxattr!(req!, ino, x as number); break;
        case OP.ACCESS: r = h.access!(req!, ino, x as number); break;
        case OP.CLOSED:
          isClosed = true;
          if (x) fail(undefined, op, sysError(Object.keys(E).find((k) => E[k] === x) ?? 'EIO', 'read', '/dev/fuse', 'the FUSE loop failed'));
          resolveClosed();
          return;
        default:
          if (req) b.replyErrIfPending(req, E.ENOSYS!);
          return;
      }
    } catch (err) {
      fail(req, op, err);
      return;
    }
    if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(undefined, (err) => fail(req, op, err));
  };

  const ns = config.xattrNamespaces;
  if (ns && ns.some((p) => typeof p !== 'string' || p === '' || p.includes('\0'))) {
    throw new TypeError('xattrNamespaces must be non-empty strings without NUL');
  }
  const nsBytes = ns ? Buffer.from(ns.map((p) => `${p}\0`).join(''), 'utf8') : null;
  let handle: object;
  try {
    handle = b.mount(mnt, options.join(','), mask, !!config.exportSupport, nsBytes, config.cacheEntries ?? 32768, config.pushContent ?? true, dispatch);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.syscall === 'fuse_mount' || e.syscall === 'fuse_lowlevel_new') {
      e.message += e.syscall === 'fuse_lowlevel_new'
        ? ' (an option neither the kernel nor libfuse knows; libfuse printed it on stderr)'
        : ' (libfuse printed the reason on stderr)';
    }
    throw e;
  }

  const session: FuseSession = {
    mountpoint: mnt,
    closed,
    get isClosed() {
      return isClosed;
    },
    async unmount(opts: UnmountOptions = {}): Promise<void> {
      if (isClosed) return;
      const force = !!opts.force;
      try {
        await b.umount(mnt, force || !!opts.lazy);
      } catch (err) {
        // EINVAL: no longer a mount point (unmounted behind our back): the session ends by itself
        if (isClosed) return;
        if (!force && (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      }
      if (force) b.stop(handle);
      await closed;
    },
    dropCached(): void {
      if (!isClosed) b.dropCached(handle);
    },
    fetchWith(secret: Uint8Array): boolean {
      return !isClosed && b.fetchWith(handle, secret);
    },
    offerStoredContent(node: bigint, ino: bigint, size: number, chunks: readonly FuseStoredChunk[]): boolean {
      return !isClosed && chunks.length > 0 && b.offerStoredContent(handle, node, ino, size, encodeStoredChunks(chunks));
    },
    offerStream(node: bigint, ino: bigint, size: number, reached: number, chunks: readonly FuseStoredChunk[], extend = false): boolean {
      return !isClosed && chunks.length > 0 && b.offerStream(handle, node, ino, size, reached, encodeStoredChunks(chunks), extend);
    },
    invalidateEntry(parent: bigint, name: Uint8Array): boolean {
      return !isClosed && b.invalidateEntry(handle, parent, name);
    },
    contentPushed(node: bigint): boolean {
      return !isClosed && b.contentPushed(handle, node);
    },
    requestCounts(): Record<string, number> {
      const out: Record<string, number> = {};
      b.requestCounts(handle).forEach((n, op) => {
        if (n > 0) out[KERNEL_OPCODE_NAMES[op] ?? `OP${op}`] = n;
      });
      return out;
    },
  };
  return session;
}

const flagsOf = (o: OpenOptions): number => (o.keepCache ? 1 : 0) | (o.directIo ? 2 : 0) | (o.nonseekable ? 4 : 0);

function errnoArg(errno: number | string): number {
  if (typeof errno === 'number') return errno;
  const n = E[errno];
  if (typeof n !== 'number') throw new TypeError(`unknown errno code ${JSON.stringify(errno)}`);
  return n;
}

/** Error answer: an errno number (e.g. 2) or code ('ENOENT'). 0 is success (release, releasedir, access). */
export function replyErr(req: FuseRequest, errno: number | string): boolean {
  return native().replyErr(req, errnoArg(errno));
}

/** Success without data: release, releasedir, access. */
export function replyOk(req: FuseRequest): boolean {
  return native().replyErr(req, 0);
}

/**
 * lookup answer. Each positive reply adds one kernel reference to entry.ino (given back
 * via forget). False when not delivered: interrupted, or answered EIO by the binding
 * because the kernel may hold entry.ino as another entry through a lookup the binding
 * answered and `ref` has not reported yet (node ids are hashes; two entries must never
 * become one inode).
 */
export function replyEntry(req: FuseRequest, entry: FuseEntry): boolean {
  return native().replyEntry(req, entry);
}

/** Negative lookup answer cached for entryTimeout seconds (cheaper than ENOENT for immutable trees). */
export function replyNoEntry(req: FuseRequest, entryTimeout: number): boolean {
  return native().replyEntry(req, { ino: 0n, entryTimeout });
}

/** getattr answer; timeoutSec: how long the kernel may cache it; caching: what the binding may reuse. */
export function replyAttr(req: FuseRequest, attr: FuseAttr, timeoutSec: number, caching: ReplyCaching = {}): boolean {
  return native().replyAttr(req, attr, timeoutSec, (caching.immutable ? 1 : 0) | (caching.noXattrs ? 2 : 0));
}

/**
 * readlink answer: the target's raw bytes (no NUL, at most 4096). The binding answers
 * readlink of this node itself with the same target for reuseSec seconds (0: never):
 * the kernel asks on every path walk through a symlink (libfuse 2 cannot let it cache).
 */
export function replyReadlink(req: FuseRequest, target: Uint8Array, reuseSec = 0): boolean {
  return native().replyReadlink(req, target, reuseSec);
}

/** open/opendir answer. fh (a safe integer) comes back in read/readdir/release. */
export function replyOpen(req: FuseRequest, fh: number, opts: OpenOptions = {}): boolean {
  return native().replyOpen(req, fh, flagsOf(opts));
}

/** Data answer for read, getxattr and listxattr; the bytes are written to the kernel straight from `data`. */
export function replyBuf(req: FuseRequest, data: Uint8Array): boolean {
  return native().replyBuf(req, data);
}

/** Size answer for getxattr/listxattr with size 0. */
export function replyXattrSize(req: FuseRequest, size: number): boolean {
  return native().replyXattrSize(req, size);
}

export function replyStatfs(req: FuseRequest, s: FuseStatfs): boolean {
  return native().replyStatfs(req, s);
}

/**
 * readdir answer: packs entries in order until `size` bytes are full, replies,
 * and returns how many were packed (the rest belong to the next readdir, which
 * arrives with the last packed entry's nextOffset). An empty array (or 0
 * packed) means end of directory. A malformed entry throws a TypeError and
 * nothing is sent. Returns 0 when the session has ended. `end`: these are the last
 * entries of a directory of immutable content (its st_ino): when all fit, the binding
 * answers the kernel's next readdir, the one that finds the end, itself.
 */
export function replyDirents(req: FuseRequest, size: number, entries: readonly FuseDirent[], end?: { dirIno: bigint }): number {
  let nodes: Buffer | null = null;
  for (let i = 0; i < entries.length; i++) {
    const n = entries[i]!.node;
    if (!n) continue;
    nodes ??= Buffer.alloc(entries.length * DN_BYTES);
    packNode(nodes, i * DN_BYTES, n);
  }
  const plus = plusListings.get(req);
  const sent = native().replyDirents(req, size, entries, nodes, end?.dirIno);
  if (plus) {
    plusListings.delete(req);
    // The kernel linked every entry sent with a node (but . and ..); one it could not
    // link comes back as a forget. The binding sent a name alone, and zeroed its node's
    // id, where the kernel may hold that id as another entry JS has not heard of yet.
    for (let i = 0; i < sent; i++) {
      const e = entries[i]!;
      if (e.node && !isDotName(e.name) && nodes!.readBigUInt64LE(i * DN_BYTES) !== 0n) plus.ref(e.node.ino, plus.parent, e.name, true);
    }
  }
  return sent;
}

/** The least room an entry of a READDIRPLUS reply takes (fuse_direntplus with a 1-byte name). */
export const DIRENTPLUS_MIN_BYTES = 160;

/** READDIRPLUS requests not answered yet: the directory, and whom to tell of linked nodes. */
const plusListings = new WeakMap<FuseRequest, { parent: bigint; ref: NonNullable<LowLevelHandlers['ref']> }>();

function isDotName(name: Buffer): boolean {
  return name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e));
}

/** Bytes per FuseDirent.node in the buffer the addon reads (fuse_ll.c, DN_*). */
const DN_BYTES = 96;

function packNode(b: Buffer, at: number, n: NonNullable<FuseDirent['node']>): void {
  const a = n.attr;
  b.writeBigUInt64LE(n.ino, at);
  b.writeBigUInt64LE(a.ino, at + 8);
  b.writeDoubleLE(a.size, at + 16);
  b.writeDoubleLE(a.blocks ?? Math.ceil(a.size / 512), at + 24);
  b.writeDoubleLE(a.rdev ?? 0, at + 32);
  b.writeBigInt64LE(a.atimeNs, at + 40);
  b.writeBigInt64LE(a.mtimeNs, at + 48);
  b.writeBigInt64LE(a.ctimeNs, at + 56);
  b.writeDoubleLE(n.timeout, at + 64);
  b.writeUInt32LE(a.mode, at + 72);
  b.writeUInt32LE(a.nlink, at + 76);
  b.writeUInt32LE(a.uid, at + 80);
  b.writeUInt32LE(a.gid, at + 84);
  b.writeUInt32LE(a.blksize ?? 0, at + 88);
  b.writeUInt32LE(1 | (n.noXattrs ? 2 : 0), at + 92);
}
