// Mounting and unmounting: mount-point checks (missing, not empty, already mounted, stale),
// the mount options fuse-native cannot build itself, and noticing an unmount done by
// someone else. Nothing here blocks the event loop: this process serves the mount, and a
// synchronous call that touched it would wait for itself.

import { promises as fsp } from 'node:fs';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { Vfs, XATTR_NAMESPACES } from '../read/vfs.js';
import { StoredChunk } from '../read/file-reader.js';
import { SnapfsError, errnoCode } from '../errors.js';
import { loadFuseNative, FuseNativeInstance } from './native.js';
import { FuseOperations } from './operations.js';
import { lowLevelHandlers } from './lowlevel.js';
import { HeldNodesTrim, heldNodesBudget } from './held-nodes.js';
import { mountLowLevel, FuseSession } from '../platform/libfuse.js';

/** Attribute and entry timeout (seconds): see docs/mount.md, "Caching". */
export const ATTR_TIMEOUT_S = 1;

export interface MountOptions {
  /** Let users other than the mounting one in (the kernel still checks each file's mode). */
  allowOther?: boolean;
  /** Keep every node libfuse hands out, so NFS file handles stay valid (noforget). */
  nfs?: boolean;
  /** Log line sink for errors while serving. */
  log?: (line: string) => void;
  /** libfuse debug output on stderr. */
  debug?: boolean;
}

/**
 * Which binding serves the mount. snapfs's own low-level binding is the default: it passes
 * names as raw bytes, 64-bit inode numbers and nanosecond times, with per-entry timeouts.
 * fuse-native (libfuse's high-level, path-based API) serves --nfs mounts, where libfuse's
 * `noforget` keeps every node so NFS file handles stay valid; see docs/mount.md.
 */
export function bindingFor(opts: MountOptions): 'lowlevel' | 'fuse-native' {
  if (process.env.SNAPFS_FUSE === 'fuse-native' || opts.nfs) return 'fuse-native';
  return 'lowlevel';
}

/** Mount options for the low-level binding: caching is decided per reply, not here. */
export function lowLevelMountOptions(opts: MountOptions): string[] {
  const o = ['ro', 'default_permissions', 'fsname=snapfs', 'subtype=snapfs'];
  if (opts.allowOther) o.push('allow_other');
  if (opts.debug) o.push('debug');
  return o;
}

/** The mount options passed to libfuse's high-level API (fuse-native). */
export function mountOptions(opts: MountOptions): string[] {
  const o = [
    'ro',
    'use_ino',
    'readdir_ino',
    'default_permissions',
    'kernel_cache',
    `attr_timeout=${ATTR_TIMEOUT_S}`,
    `entry_timeout=${ATTR_TIMEOUT_S}`,
    'negative_timeout=0',
    'fsname=snapfs',
    'subtype=snapfs',
  ];
  if (opts.allowOther) o.push('allow_other');
  if (opts.nfs) o.push('noforget');
  if (opts.debug) o.push('debug');
  return o;
}

// --- /proc/self/mountinfo -----------------------------------------------------------

export interface MountEntry {
  id: number;
  mountPoint: string;
  fsType: string;
  source: string;
  /** major:minor of the mounted filesystem (names its backing device in /sys/class/bdi). */
  device: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export async function readMounts(): Promise<MountEntry[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash < 0 || f.length < dash + 3) continue;
    out.push({ id: Number(f[0]), mountPoint: unescapeMountField(f[4]!), fsType: f[dash + 1]!, source: unescapeMountField(f[dash + 2]!), device: f[2]! });
  }
  return out;
}

/** The topmost mount at exactly `mountPoint` (an absolute path), if any. */
export async function findMount(mountPoint: string): Promise<MountEntry | undefined> {
  const all = await readMounts();
  let found: MountEntry | undefined;
  for (const m of all) if (m.mountPoint === mountPoint) found = m;
  return found;
}

/**
 * The kernel reads ahead 128 KiB on a FUSE mount: one request in flight per sequential
 * reader, each paying a round trip. A wider window keeps several requests in flight, which
 * the server answers concurrently (a dump reads ~20% faster). Only root may widen it; the
 * mount works the same without.
 */
export const READAHEAD_KIB = 1024;

async function widenReadahead(entry: MountEntry, log?: (line: string) => void): Promise<void> {
  const knob = `/sys/class/bdi/${entry.device}/read_ahead_kb`;
  try {
    const current = Number((await fsp.readFile(knob, 'utf8')).trim());
    if (current < READAHEAD_KIB) await fsp.writeFile(knob, `${READAHEAD_KIB}\n`);
  } catch (err) {
    if (process.getuid?.() === 0) log?.(`read-ahead left at the kernel's default: ${knob}: ${(err as Error).message}`);
  }
}

/** A path with its parent's symlinks resolved, without touching the path itself (it may be a dead mount). */
export async function canonicalMountPoint(p: string): Promise<string> {
  const abs = path.resolve(p);
  if (abs === '/') return abs;
  try {
    return path.join(await fsp.realpath(path.dirname(abs)), path.basename(abs));
  } catch {
    return abs;
  }
}

// --- unmount --------------------------------------------------------------------------

function run(cmd: string, args: string[]): Promise<{ ok: boolean; stderr: string; missing: boolean }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, _stdout, stderr) => {
      resolve({ ok: !err, stderr: String(stderr || (err ? err.message : '')).trim(), missing: errnoCode(err) === 'ENOENT' });
    });
  });
}

/**
 * Unmounts `mountPoint`: umount(8) as root, fusermount otherwise. When the mount is busy
 * and `lazy` allows it, detaches it instead (processes still inside keep their files
 * until they let go). Returns how it went.
 */
export async function unmountPath(mountPoint: string, lazy = true): Promise<'unmounted' | 'detached'> {
  const root = process.getuid?.() === 0;
  const attempts: Array<[string, string[], 'unmounted' | 'detached']> = root
    ? [['umount', [mountPoint], 'unmounted'], ['umount', ['-l', mountPoint], 'detached']]
    : [['fusermount', ['-u', mountPoint], 'unmounted'], ['fusermount', ['-uz', mountPoint], 'detached'], ['fusermount3', ['-u', mountPoint], 'unmounted'], ['fusermount3', ['-uz', mountPoint], 'detached']];
  const errors: string[] = [];
  for (const [cmd, args, result] of attempts) {
    if (result === 'detached' && !lazy) continue;
    const r = await run(cmd, args);
    if (r.ok) return result;
    errors.push(r.missing ? `${cmd}: not installed` : `${cmd} ${args.join(' ')}: ${r.stderr}`);
    // Already gone: someone else unmounted it between our check and now.
    if (!(await findMount(mountPoint))) return 'unmounted';
  }
  throw new SnapfsError('IO_ERROR', `cannot unmount ${mountPoint}: ${errors.join('; ')}`);
}

// --- mount-point checks -------------------------------------------------------------------

/**
 * Checks that `mountPoint` can take the mount: it exists, is an empty directory and is
 * not mounted. A stale snapfs mount (its server died: "Transport endpoint is not
 * connected") is unmounted first. Returns whether a stale mount was cleaned.
 */
export async function prepareMountPoint(mountPoint: string): Promise<{ cleanedStale: boolean }> {
  let cleanedStale = false;
  const existing = await findMount(mountPoint);
  if (existing) {
    let alive = true;
    try {
      // Not stat: the kernel may answer that from cached attributes for a second after
      // the server died. Opening the directory always asks the server.
      await fsp.readdir(mountPoint);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOTCONN' || code === 'ECONNABORTED') alive = false;
      else throw new SnapfsError('INVALID_ARGUMENT', `mount point ${mountPoint}: ${(err as Error).message}`, { cause: err });
    }
    if (alive) {
      throw new SnapfsError('INVALID_ARGUMENT', `${mountPoint} is already a mount point (${existing.fsType} from ${existing.source}); unmount it first${existing.fsType === 'fuse.snapfs' ? ` ('snapfs umount ${mountPoint}')` : ''}`);
    }
    if (!existing.fsType.startsWith('fuse')) {
      throw new SnapfsError('INVALID_ARGUMENT', `${mountPoint} is a dead ${existing.fsType} mount; unmount it first`);
    }
    await unmountPath(mountPoint, true);
    cleanedStale = true;
  }
  let st;
  try {
    st = await fsp.stat(mountPoint);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw new SnapfsError('INVALID_ARGUMENT', `mount point ${mountPoint} does not exist (create an empty directory first)`);
    throw new SnapfsError('INVALID_ARGUMENT', `mount point ${mountPoint}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isDirectory()) throw new SnapfsError('INVALID_ARGUMENT', `mount point ${mountPoint} is not a directory`);
  const names = await fsp.readdir(mountPoint);
  if (names.length > 0) throw new SnapfsError('INVALID_ARGUMENT', `mount point ${mountPoint} is not empty (${names.length} entries); mount on an empty directory`);
  return { cleanedStale };
}

// --- the mount ----------------------------------------------------------------------------

/** fuse-native's watchdog answers ETIMEDOUT when an operation takes longer than this. */
const OP_TIMEOUTS_MS = { default: 120_000, read: 600_000, readdir: 600_000, open: 300_000, statfs: 300_000 };

export class MountedFs {
  private closing: Promise<void> | undefined;
  private watcher: NodeJS.Timeout | undefined;
  private goneWaiters: Array<() => void> = [];
  private gone = false;

  private constructor(
    readonly mountPoint: string,
    readonly options: string[],
    private readonly releaseLoop: () => void,
    readonly mountId: number,
    readonly binding: 'lowlevel' | 'fuse-native',
    /** Requests the kernel sent, by name (empty for fuse-native, which does not count them). */
    readonly requestCounts: () => Record<string, number> = () => ({}),
  ) {}

  /** Mounts `vfs` at `mountPoint` (already checked with prepareMountPoint); resolves once the kernel talks to us. */
  static async mount(vfs: Vfs, mountPoint: string, opts: MountOptions = {}): Promise<MountedFs> {
    return bindingFor(opts) === 'lowlevel' ? MountedFs.mountLowLevel(vfs, mountPoint, opts) : MountedFs.mountFuseNative(vfs, mountPoint, opts);
  }

  private static async mountLowLevel(vfs: Vfs, mountPoint: string, opts: MountOptions): Promise<MountedFs> {
    const options = lowLevelMountOptions(opts);
    // SNAPFS_FUSE_NO_CACHE=1: every request reaches JS (to compare with, or rule out, the
    // answers the binding gives itself).
    const replyCaching = process.env.SNAPFS_FUSE_NO_CACHE !== '1';
    // SNAPFS_FUSE_NO_PUSH=1: files read ahead are not pushed into the page cache, so that
    // their reads reach the binding (to compare with, or to test its store).
    const pushContent = process.env.SNAPFS_FUSE_NO_PUSH !== '1';
    // SNAPFS_FUSE_NO_STREAM=1: every read of a large file reaches JS (to compare with).
    const streaming = process.env.SNAPFS_FUSE_NO_STREAM !== '1';
    let session: FuseSession | undefined;
    try {
      const offerStoredContent = (node: bigint, ino: bigint, size: number, chunks: readonly StoredChunk[]): boolean =>
        session?.offerStoredContent(node, ino, size, chunks) ?? false;
      const offerStream = streaming
        ? (node: bigint, ino: bigint, size: number, reached: number, chunks: readonly StoredChunk[], extend: boolean): boolean =>
            session?.offerStream(node, ino, size, reached, chunks, extend) ?? false
        : undefined;
      const contentPushed = (node: bigint): boolean => session?.contentPushed(node) ?? false;
      const handlers = lowLevelHandlers(vfs, { log: opts.log, replyCaching, offerStoredContent, offerStream, contentPushed });
      session = mountLowLevel(mountPoint, options, handlers, {
        onError: (err, op) => opts.log?.(`${op}: ${(err as Error).message ?? String(err)}`),
        xattrNamespaces: replyCaching ? XATTR_NAMESPACES : undefined,
        pushContent,
      });
      // Files read ahead, and streamed, are loaded on the binding's threads, verified as the store does.
      if (!session.fetchWith(vfs.blobSecret())) opts.log?.('reading ahead across files is off: its threads did not start');
    } catch (err) {
      throw new SnapfsError('IO_ERROR', `mounting at ${mountPoint} failed: ${(err as Error).message} (is /dev/fuse available?)`, { cause: err });
    }
    const entry = await findMount(mountPoint);
    if (!entry) throw new SnapfsError('IO_ERROR', `mounted at ${mountPoint}, but the mount is not listed in /proc/self/mountinfo`);
    await widenReadahead(entry, opts.log);
    // After the kernel side is gone, end the session so the event loop can finish.
    const releaseLoop = (): void => {
      if (!session.isClosed) session.unmount({ force: true }).catch(() => undefined);
    };
    // A forgotten snapshot's content must not keep being answered by the binding, and
    // the kernel may let go of its nodes.
    const live = session;
    const held = new HeldNodesTrim(vfs, live, heldNodesBudget());
    vfs.onSnapshotsRemoved(() => {
      live.dropCached();
      held.releaseForgotten();
    });
    const m = new MountedFs(mountPoint, options, releaseLoop, entry.id, 'lowlevel', () => live.requestCounts());
    session.closed.then(() => m.markGone(), () => m.markGone()).finally(() => held.stop());
    m.watch();
    return m;
  }

  private static async mountFuseNative(vfs: Vfs, mountPoint: string, opts: MountOptions): Promise<MountedFs> {
    const { Fuse, binding } = loadFuseNative();
    const options = mountOptions(opts);
    const optionString = '-o' + options.join(',');
    // fuse-native builds its option string from a fixed list that lacks ro, use_ino...:
    // a subclass supplies ours.
    class SnapfsFuse extends (Fuse as unknown as new (m: string, o: Record<string, unknown>, x: Record<string, unknown>) => FuseNativeInstance) {
      override _fuseOptions(): string {
        return optionString;
      }

      // fuse-native would turn every readdir stat into a fresh array; ours already are.
      _op_readdir(signal: (err: number, names?: string[], stats?: Uint32Array[]) => void, path: string): void {
        (handlers.readdir as (p: string, cb: (err: number, names?: string[], stats?: Uint32Array[]) => void) => void)(path, (err: number, names?: string[], stats?: Uint32Array[]) => {
          if (err) signal(err);
          else signal(0, names, stats);
        });
      }
    }
    const ops = new FuseOperations(vfs, { log: opts.log });
    const handlers = ops.handlers();
    const fuse = new SnapfsFuse(mountPoint, handlers, { timeout: OP_TIMEOUTS_MS });
    await new Promise<void>((resolve, reject) => {
      fuse.mount((err) => {
        if (err) reject(new SnapfsError('IO_ERROR', `mounting at ${mountPoint} failed: ${err.message}${err.message === 'fuse failed' ? ' (see the message from libfuse above; is /dev/fuse available?)' : ''}`, { cause: err }));
        else resolve();
      });
    });
    const entry = await findMount(mountPoint);
    if (!entry) throw new SnapfsError('IO_ERROR', `mounted at ${mountPoint}, but the mount is not listed in /proc/self/mountinfo`);
    const releaseLoop = (): void => {
      if (fuse._thread) binding.fuse_native_unmount(mountPoint, fuse._thread);
    };
    const m = new MountedFs(mountPoint, options, releaseLoop, entry.id, 'fuse-native');
    m.watch();
    return m;
  }

  /** Notices an unmount done by someone else (umount, snapfs umount) within a second. */
  private watch(): void {
    this.watcher = setInterval(() => {
      readMounts().then(
        (mounts) => {
          if (!mounts.some((e) => e.id === this.mountId)) this.markGone();
        },
        () => undefined,
      );
    }, 1000);
  }

  private markGone(): void {
    if (this.gone) return;
    this.gone = true;
    if (this.watcher) clearInterval(this.watcher);
    for (const w of this.goneWaiters.splice(0)) w();
  }

  /** Resolves when the mount is gone, whoever unmounted it. */
  waitUntilGone(): Promise<void> {
    if (this.gone) return Promise.resolve();
    return new Promise((resolve) => this.goneWaiters.push(resolve));
  }

  /** Unmounts (lazily if busy) and lets the event loop end. Safe to call more than once. */
  unmount(): Promise<void> {
    this.closing ??= (async () => {
      try {
        if (!this.gone && (await readMounts()).some((e) => e.id === this.mountId)) await unmountPath(this.mountPoint, true);
      } finally {
        this.markGone();
        this.releaseLoop();
      }
    })();
    return this.closing;
  }
}
