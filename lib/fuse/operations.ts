// fuse-native's operations over the VFS. fuse-native uses libfuse's high-level, path-based
// API, so every operation starts from a path: it is resolved component by component with
// Vfs.lookup, and resolutions are kept in a bounded cache (attributes of snapshot content
// never change, so a cached resolution stays right; the cache is dropped when snapshots
// disappear). Every operation answers asynchronously: libfuse's worker threads wait while
// the event loop serves many requests at once. Errors become errno in errnoOf only.

import { Vfs, ROOT_ID, VfsAttr, isShownXattrName } from '../read/vfs.js';
import { ByteLru } from '../util/lru.js';
import { SnapfsError } from '../errors.js';
import { errnoOf, isWorthLogging, ENODATA, EOPNOTSUPP, EROFS } from './errno.js';
import { fromFuseName, toFuseName } from './names.js';

/** fuse-native's stat fields: 32-bit inode numbers, times in milliseconds. */
export interface FuseStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  dev: number;
  nlink: number;
  ino: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: number;
  mtime: number;
  ctime: number;
}

type Cb<T extends unknown[] = []> = (err: number, ...rest: T) => void;

/**
 * fuse-native's native stat layout: 18 uint32 (mode, uid, gid, size lo/hi, dev, nlink,
 * ino, rdev, blksize, blocks lo/hi, atime, mtime, ctime as ms lo/hi). readdir hands
 * these over directly (see SnapfsFuse._op_readdir in mount.ts).
 */
export const STAT_WORDS = 18;

/** Milliseconds for fuse-native (which cannot pass times before 1970: shown as 0). */
function ms(ns: bigint): number {
  return ns <= 0n ? 0 : Number(ns / 1_000_000n);
}

export function toFuseStat(a: VfsAttr): FuseStat {
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    dev: 0,
    nlink: a.nlink,
    ino: Number(a.ino & 0xffffffffn),
    rdev: a.rdev,
    blksize: a.blksize,
    blocks: a.blocks,
    atime: ms(a.atimeNs),
    mtime: ms(a.mtimeNs),
    ctime: ms(a.ctimeNs),
  };
}

export interface OperationsOptions {
  /** Called with a line for the log on errors other than "not found"-like ones. */
  log?: (line: string) => void;
  /** Path resolutions kept; default 4 MiB worth. */
  pathCacheBytes?: number;
}

export class FuseOperations {
  /** Resolved paths: the node id and its serial then (Vfs.serialOf). */
  private readonly paths: ByteLru<string, { id: bigint; serial: number }>;
  private epoch: number;

  constructor(private readonly vfs: Vfs, private readonly opts: OperationsOptions = {}) {
    this.paths = new ByteLru(opts.pathCacheBytes ?? 4 * 1024 * 1024);
    this.epoch = vfs.epoch;
  }

  /** Node id of a path ("/a/b"), from the cache or by lookups from the nearest cached parent. */
  async resolve(path: string): Promise<bigint> {
    if (this.vfs.epoch !== this.epoch) {
      this.paths.clear();
      this.epoch = this.vfs.epoch;
    }
    if (path === '/' || path === '') return ROOT_ID;
    const hit = this.paths.get(path);
    // The VFS may have dropped the node (its table is bounded), and the id may name
    // another entry since (a hash collision): then look it up again.
    if (hit !== undefined && this.vfs.serialOf(hit.id) === hit.serial) return hit.id;
    const slash = path.lastIndexOf('/');
    const parent = await this.resolve(slash <= 0 ? '/' : path.slice(0, slash));
    const candidates = fromFuseName(path.slice(slash + 1));
    let lastErr: unknown;
    for (const name of candidates) {
      try {
        const { id } = await this.vfs.lookup(parent, name);
        const serial = this.vfs.serialOf(id);
        if (serial !== undefined) this.paths.set(path, { id, serial }, path.length * 2 + 140);
        return id;
      } catch (err) {
        if (!(err instanceof SnapfsError && err.code === 'PATH_NOT_FOUND')) throw err;
        lastErr = err;
      }
    }
    throw lastErr;
  }

  /** The node id of an already resolved path, without waiting; undefined when not cached. */
  private cached(path: string): bigint | undefined {
    if (this.vfs.epoch !== this.epoch) return undefined;
    if (path === '/') return ROOT_ID;
    const hit = this.paths.get(path);
    return hit !== undefined && this.vfs.serialOf(hit.id) === hit.serial ? hit.id : undefined;
  }

  /** getattr: answered at once for cached snapshot content (the common case), else resolved. */
  private getattr(op: string, path: string, cb: Cb<[FuseStat?]>): void {
    const id = this.cached(path);
    const attr = id === undefined ? undefined : this.vfs.cachedAttr(id);
    if (attr) return cb(0, toFuseStat(attr));
    this.run(op, path, cb, async () => [toFuseStat(await this.withNode(path, (n) => this.vfs.getattr(n)))]);
  }

  /** Runs `fn` on the node of `path`; a node the VFS has dropped is looked up again once. */
  private async withNode<T>(path: string, fn: (id: bigint) => Promise<T>): Promise<T> {
    const id = await this.resolve(path);
    try {
      return await fn(id);
    } catch (err) {
      // Dropped between resolving and using it (other requests ran meanwhile): once more.
      if (!(err instanceof SnapfsError && err.code === 'STALE_HANDLE')) throw err;
      return fn(await this.resolve(path));
    }
  }

  private fail(op: string, path: string, err: unknown): number {
    const errno = errnoOf(err);
    if (isWorthLogging(errno)) this.opts.log?.(`${op} ${JSON.stringify(path)}: ${(err as Error)?.message ?? String(err)}`);
    return errno;
  }

  /** Calls cb(0, ...results) or cb(-errno): fuse-native's callback convention. */
  private run(op: string, path: string, cb: (err: number, ...rest: any[]) => void, fn: () => Promise<unknown[]>): void {
    fn().then(
      (rest) => cb(0, ...rest),
      (err) => cb(this.fail(op, path, err)),
    );
  }

  /** The operations object fuse-native expects. */
  handlers(): Record<string, unknown> {
    const vfs = this.vfs;
    const readOnly = (...args: unknown[]): void => {
      const cb = args[args.length - 1] as (err: number) => void;
      process.nextTick(cb, EROFS);
    };
    return {
      init: (cb: (err: number) => void) => process.nextTick(cb, 0),

      getattr: (path: string, cb: Cb<[FuseStat?]>) => this.getattr('getattr', path, cb),

      fgetattr: (path: string, _fd: number, cb: Cb<[FuseStat?]>) => this.getattr('fgetattr', path, cb),

      readdir: (path: string, cb: Cb<[string[]?, Uint32Array[]?]>) =>
        this.run('readdir', path, cb, async () => {
          const names: string[] = [];
          const types: number[] = [];
          const inos: number[] = [];
          await this.withNode(path, async (id) => {
            names.length = types.length = inos.length = 0;
            let offset: number | undefined = 0;
            while (offset !== undefined) {
              const page = await vfs.readdir(id, offset);
              for (const e of page.entries) {
                names.push(toFuseName(e.name));
                types.push(e.type);
                inos.push(Number(e.ino & 0xffffffffn));
              }
              offset = page.next;
            }
          });
          // With use_ino, libfuse takes d_ino and d_type from these. One block for all
          // (views into it) rather than an array per entry: a listing of 100,000 names
          // would otherwise allocate 100,000 small buffers.
          const block = new Uint32Array(STAT_WORDS * names.length);
          const stats: Uint32Array[] = new Array(names.length);
          for (let i = 0; i < names.length; i++) {
            const at = i * STAT_WORDS;
            block[at] = types[i]!;
            block[at + 6] = 1; // nlink
            block[at + 7] = inos[i]!;
            stats[i] = block.subarray(at, at + STAT_WORDS);
          }
          return [names, stats];
        }),

      readlink: (path: string, cb: Cb<[string?]>) =>
        this.run('readlink', path, cb, async () => [toFuseName(await this.withNode(path, (id) => vfs.readlink(id)))]),

      open: (path: string, flags: number, cb: Cb<[number?]>) =>
        this.run('open', path, cb, async () => [await this.withNode(path, (id) => vfs.open(id, flags))]),

      read: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void) => {
        vfs.read(fd, pos, len, (data) => data.copy(buf, 0, 0, Math.min(len, data.length))).then(
          (n) => cb(n),
          (err) => cb(this.fail('read', path, err)),
        );
      },

      release: (_path: string, fd: number, cb: (err: number) => void) => {
        vfs.release(fd);
        process.nextTick(cb, 0);
      },

      // No flush, fsync or opendir handlers on purpose: libfuse answers those itself
      // (flush: ENOSYS once, after which the kernel stops sending it on every close),
      // sparing a round trip through the event loop.

      statfs: (path: string, cb: Cb<[Record<string, number>?]>) =>
        this.run('statfs', path, cb, async () => {
          const s = await vfs.statfs();
          // fuse-native passes 32-bit block counts: grow the block size until they fit.
          let frsize = 4096;
          while (Math.ceil(s.bytes / frsize) > 0xffffffff) frsize *= 2;
          return [{ bsize: frsize, frsize, blocks: Math.ceil(s.bytes / frsize), bfree: 0, bavail: 0, files: s.snapshots, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: s.nameMax }];
        }),

      getxattr: (path: string, name: string, _position: number, cb: (err: number, value?: Buffer | null) => void) => {
        // Most lookups are for names nobody stores (ls asks for security.selinux on every
        // file): answer those at once when the node is at hand.
        const names = fromFuseName(name).filter(isShownXattrName);
        if (names.length === 0) return cb(EOPNOTSUPP);
        const id = this.cached(path);
        const list = id === undefined ? undefined : this.vfs.cachedXattrs(id);
        if (list) {
          for (const n of names) {
            const hit = list.find(([k]) => k.equals(n));
            if (hit) return cb(0, hit[1]);
          }
          return cb(ENODATA);
        }
        this.withNode(path, async (id) => {
          for (const n of names) {
            const v = await vfs.getxattr(id, n);
            if (v) return v;
          }
          return undefined;
        }).then(
          (v) => (v ? cb(0, v) : cb(ENODATA)),
          (err) => cb(this.fail('getxattr', path, err)),
        );
      },

      listxattr: (path: string, cb: Cb<[string[]?]>) =>
        this.run('listxattr', path, cb, async () => [(await this.withNode(path, (id) => vfs.listxattr(id))).map(toFuseName)]),

      // Writes: the kernel already refuses them on a read-only mount; these answer anyone
      // who asks anyway.
      truncate: readOnly,
      ftruncate: readOnly,
      utimens: readOnly,
      chown: readOnly,
      chmod: readOnly,
      mknod: readOnly,
      setxattr: readOnly,
      removexattr: readOnly,
      write: (_path: string, _fd: number, _buf: Buffer, _len: number, _pos: number, cb: (result: number) => void) => process.nextTick(cb, EROFS),
      create: readOnly,
      unlink: readOnly,
      rename: readOnly,
      link: readOnly,
      symlink: readOnly,
      mkdir: readOnly,
      rmdir: readOnly,
    };
  }
}

