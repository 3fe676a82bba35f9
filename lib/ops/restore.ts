// Restores a snapshot (or one path of it) into a target directory with full metadata.
// Safety: the target must be new or empty and not a symlink; every name comes from a
// validated tree (one path component, never '.' or '..'); every directory, the target
// included, is opened with O_DIRECTORY|O_NOFOLLOW right after it is made (and must be ours),
// and what goes in it is created through that descriptor (/proc/self/fd/N/name) with calls
// that never follow a final symlink (mkdir, O_EXCL|O_NOFOLLOW, symlink, link, mknod); modes
// are set through descriptors only. So nothing is ever written through a symlink, whether
// this restore made it or someone who can write to TARGET swaps one in while it runs, and
// the depth of the tree does not matter (paths stay far below PATH_MAX).

import { promises as fs, constants } from 'node:fs';
import path from 'node:path';
import { mknod, newFile, setXattr, utimensNoFollow } from '../platform/native.js';
import { idFromHex } from '../format/blob-id.js';
import { EntryKind, TreeEntry } from '../format/tree.js';
import { SnapshotRecord } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { TreeReader, pathComponents } from '../tree/tree-reader.js';
import { FileReader } from '../read/file-reader.js';
import { SnapfsError, errnoCode, fromSystemError } from '../errors.js';
import { baseDescriptor } from '../util/long-path.js';
import { writeFully } from '../store/files.js';

const SLASH = Buffer.from('/');
/** open(2)'s O_PATH on Linux (Node does not export it). */
const O_PATH = 0o10000000;
const EUID = process.geteuid?.() ?? 0;

export interface RestoreOptions {
  /** Path inside the snapshot; the whole snapshot when absent. */
  subPath?: string;
  onProgress?: (stats: RestoreStats, current: string) => void;
}

export interface RestoreStats {
  files: number;
  directories: number;
  others: number;
  bytes: number;
  warnings: string[];
}

const S_IFMT_BY_KIND: Partial<Record<EntryKind, number>> = {
  [EntryKind.Fifo]: constants.S_IFIFO,
  [EntryKind.CharDevice]: constants.S_IFCHR,
  [EntryKind.BlockDevice]: constants.S_IFBLK,
  [EntryKind.Socket]: constants.S_IFSOCK,
};

const isRoot = process.getuid?.() === 0;
/** Files up to this size are created whole in one job (newFile), this many at a time. */
const SMALL_FILE_BYTES = 1024 * 1024;
const SMALL_FILES_IN_FLIGHT = 8;

/** A regular file with one name (hard links need the path bookkeeping of entry()). */
function isSmallPlainFile(e: TreeEntry): boolean {
  return e.kind === EntryKind.File && e.nlink <= 1 && e.size <= SMALL_FILE_BYTES;
}

/** A time in ns as utimensat wants it: seconds (floor) and nanoseconds in [0, 1e9). */
function secondsAndNanos(ns: bigint): [number, number] {
  const sec = ns / 1_000_000_000n;
  const rest = ns - sec * 1_000_000_000n;
  return rest < 0n ? [Number(sec - 1n), Number(rest + 1_000_000_000n)] : [Number(sec), Number(rest)];
}

export async function restore(repo: Repository, snap: SnapshotRecord, target: string, opts: RestoreOptions = {}): Promise<RestoreStats> {
  const trees = new TreeReader(repo.blobs);
  // Each chunk is written once, but for those shared by several files: a small cache.
  const files = new FileReader(repo.blobs, { cacheBytes: 8 * 1024 * 1024 });
  const stats: RestoreStats = { files: 0, directories: 0, others: 0, bytes: 0, warnings: [] };
  const targetAbs = path.resolve(target);
  await prepareTarget(targetAbs);
  const r = new Restorer(trees, files, stats, opts);
  try {
    const components = pathComponents(opts.subPath ?? '');
    const rootId = idFromHex(snap.root);
    const shown = Buffer.from(targetAbs);
    // The target may belong to someone else (a user's own restore directory); what restore
    // makes inside it is reached through this descriptor only.
    const dir = await r.openDirectory(shown, shown, false);
    try {
      if (components.length === 0) {
        await r.directoryContents(rootId, dir.path, shown);
        const m = snap.rootMeta;
        await r.applyMeta(Buffer.concat([dir.path, Buffer.from('/.')]), {
          kind: EntryKind.Directory, mode: m.mode, uid: m.uid, gid: m.gid, mtimeNs: BigInt(m.mtimeNs),
        } as TreeEntry, targetAbs);
      } else {
        const { entry } = await trees.resolve(rootId, components, `${snap.source}@${snap.name}:${opts.subPath}`);
        // Like cp: restoring users/bob creates TARGET/bob.
        await r.entry(entry!, Buffer.concat([dir.path, SLASH, entry!.name]), Buffer.concat([shown, SLASH, entry!.name]));
      }
    } finally {
      await dir.close();
    }
  } finally {
    await r.close();
  }
  return stats;
}

/** A restore target must be a new or empty directory, and never a symlink. */
export async function requireEmptyTarget(target: string): Promise<void> {
  try {
    const st = await fs.lstat(target);
    if (st.isSymbolicLink()) throw new SnapfsError('UNSAFE_PATH', `restore target ${target} is a symbolic link; refusing to restore through it`);
    if (!st.isDirectory()) throw new SnapfsError('INVALID_ARGUMENT', `restore target ${target} exists and is not a directory`);
    if ((await fs.readdir(target)).length > 0) throw new SnapfsError('INVALID_ARGUMENT', `restore target ${target} is not empty`);
  } catch (err) {
    if (err instanceof SnapfsError) throw err;
    if (errnoCode(err) !== 'ENOENT') throw fromSystemError(err, target);
  }
}

async function prepareTarget(target: string): Promise<void> {
  await requireEmptyTarget(target);
  try {
    await fs.mkdir(target, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw fromSystemError(err, target);
  }
}

class Restorer {
  /** First restored path of each hard-link group, by source device:inode. */
  private readonly links = new Map<string, Buffer>();
  /** Descriptors behind /proc/self/fd paths that a hard link may still need (closed at the end). */
  private readonly pinned = new Map<number, () => Promise<void>>();
  /** The target's file system makes unnamed files (O_TMPFILE): small files go through newFile. */
  private unnamedFiles = true;

  constructor(
    private readonly trees: TreeReader,
    private readonly files: FileReader,
    private readonly stats: RestoreStats,
    private readonly opts: RestoreOptions,
  ) {}

  /**
   * Restores a tree's entries into a directory given by an open descriptor's path
   * (/proc/self/fd/N): names are looked up in that very directory, so nothing that happens
   * to the path it was reached by (renamed, replaced by a symlink) can redirect a write.
   * `shown` is its real path, for messages.
   */
  async directoryContents(treeId: Buffer, dir: Buffer, shown: Buffer): Promise<void> {
    // Small files are written several at a time, each named only once whole (newFile), so
    // a restore that dies (killed, or LMDB faulting on a damaged index) leaves none of them
    // incomplete. Everything else goes one entry at a time: at most one big file is left
    // incomplete.
    const writing = new Set<Promise<void>>();
    let failure: { err: unknown } | undefined;
    try {
      for await (const e of this.trees.entries(treeId)) {
        const dest = Buffer.concat([dir, SLASH, e.name]);
        const shownChild = Buffer.concat([shown, SLASH, e.name]);
        if (!this.unnamedFiles || !isSmallPlainFile(e)) {
          await this.entry(e, dest, shownChild);
          continue;
        }
        const job: Promise<void> = this.smallFile(e, dir, dest, shownChild)
          .catch((err: unknown) => void (failure ??= { err }))
          .finally(() => writing.delete(job));
        writing.add(job);
        if (writing.size >= SMALL_FILES_IN_FLIGHT) await Promise.race(writing);
        if (failure) break;
      }
    } finally {
      // Every file of this directory is complete (or gone) before its times are set.
      await Promise.all(writing);
    }
    if (failure) throw failure.err;
  }

  /** A small single-link file, created whole in one thread-pool job (see newFile). */
  private async smallFile(e: TreeEntry, dir: Buffer, dest: Buffer, shown: Buffer): Promise<void> {
    const display = shown.toString('utf8');
    const file = this.files.open(e);
    const parts: Buffer[] = [];
    const offsets: number[] = [];
    let bytes = 0;
    // A damaged chunk fails here, before anything is created.
    for (let i = 0; i < file.chunks.count; i++) {
      const data = await this.files.chunk(file, i);
      parts.push(data);
      offsets.push(file.chunks.offsets[i]!);
      bytes += data.length;
    }
    const [mtimeSec, mtimeNsec] = secondsAndNanos(e.mtimeNs);
    try {
      await newFile(dir, e.name, { parts, offsets, size: e.size, uid: e.uid, gid: e.gid, mode: e.mode, mtimeSec, mtimeNsec, chown: isRoot });
    } catch (err) {
      if (errnoCode(err) === 'EOPNOTSUPP') {
        // No unnamed files on this file system (NFS, FAT...): the plain way from now on.
        this.unnamedFiles = false;
        return this.entry(e, dest, shown);
      }
      throw err instanceof SnapfsError ? err : fromSystemError(err, `restoring ${display}`);
    }
    this.stats.files++;
    this.stats.bytes += bytes;
    this.applyXattrs(dest, e, display); // after the mode, as for every file; times stay
    this.opts.onProgress?.(this.stats, display);
  }

  async close(): Promise<void> {
    for (const close of this.pinned.values()) await close();
    this.pinned.clear();
  }

  /**
   * Opens a directory without following a symlink and returns its descriptor path. One this
   * restore made (`ours`) must also be owned by this process's user: another user's directory
   * swapped in between mkdir and open is refused.
   */
  async openDirectory(dir: Buffer, shown: Buffer, ours = true): Promise<{ path: Buffer; fd: number; close(): Promise<void> }> {
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ELOOP' || code === 'ENOTDIR') throw new SnapfsError('UNSAFE_PATH', `${shown.toString('utf8')}: replaced by something that is not our directory while restoring; refusing to go on`);
      throw err;
    }
    const st = await fh.stat();
    if (!st.isDirectory() || (ours && st.uid !== EUID)) {
      await fh.close();
      throw new SnapfsError('UNSAFE_PATH', `${shown.toString('utf8')}: replaced by another user's directory while restoring; refusing to go on`);
    }
    return { path: Buffer.from(`/proc/self/fd/${fh.fd}`), fd: fh.fd, close: () => fh.close() };
  }

  /** Creates `dest` (which must not exist) from `e`, recursively for directories. */
  async entry(e: TreeEntry, dest: Buffer, shown: Buffer): Promise<void> {
    const display = shown.toString('utf8');
    try {
      switch (e.kind) {
        case EntryKind.Directory: {
          await fs.mkdir(dest, { mode: 0o700 });
          const dir = await this.openDirectory(dest, shown);
          try {
            this.stats.directories++;
            await this.directoryContents(e.subtree!, dir.path, shown);
            // Through the descriptor ('N/.' is the directory itself, never a symlink).
            await this.applyMeta(Buffer.concat([dir.path, Buffer.from('/.')]), e, display);
          } finally {
            if (this.pinned.has(dir.fd)) this.pinned.set(dir.fd, dir.close);
            else await dir.close();
          }
          this.opts.onProgress?.(this.stats, display);
          return;
        }
        case EntryKind.File:
          if (e.nlink > 1) {
            const key = `${e.device}:${e.inode}`;
            const first = this.links.get(key);
            if (first) {
              await fs.link(first, dest);
              this.stats.files++;
              return; // shares the first link's data and metadata
            }
            this.links.set(key, dest);
            // The other names link to this path later: its descriptor must outlive its directory.
            const fd = baseDescriptor(dest);
            if (fd !== undefined) this.pinned.set(fd, async () => undefined);
          }
          await this.file(e, dest);
          break;
        case EntryKind.Symlink:
          await fs.symlink(e.target!, dest);
          this.stats.others++;
          break;
        default:
          await this.special(e, dest, display);
          this.stats.others++;
      }
      await this.applyMeta(dest, e, display, e.kind !== EntryKind.Symlink);
      this.opts.onProgress?.(this.stats, display);
    } catch (err) {
      if (err instanceof SnapfsError) throw err;
      throw fromSystemError(err, `restoring ${display}`);
    }
  }

  /** A regular file: created O_EXCL|O_NOFOLLOW; owner and mode set through its descriptor. */
  private async file(e: TreeEntry, dest: Buffer): Promise<void> {
    const fh = await fs.open(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      const file = this.files.open(e);
      // Write only the stored chunks: the gaps between them stay holes.
      for (let i = 0; i < file.chunks.count; i++) {
        const data = await this.files.chunk(file, i);
        await writeFully(fh, data, file.chunks.offsets[i]!);
        this.stats.bytes += data.length;
      }
      await fh.truncate(e.size);
      // chown clears setuid/setgid, so the mode goes after it.
      if (isRoot) await fh.chown(e.uid, e.gid);
      await fh.chmod(e.mode);
    } catch (err) {
      // A damaged chunk (or a full disk) must not leave a file that looks restored but
      // holds zeros where the data should be: the failed file is removed.
      await fh.close().catch(() => undefined);
      await fs.unlink(dest).catch(() => undefined);
      throw err;
    } finally {
      await fh.close().catch(() => undefined);
    }
    this.stats.files++;
  }

  /** A fifo, socket or device node; owner and mode set through an O_PATH descriptor. */
  private async special(e: TreeEntry, dest: Buffer, display: string): Promise<void> {
    mknod(dest, S_IFMT_BY_KIND[e.kind]! | 0o600, e.rdev);
    const fh = await fs.open(dest, O_PATH | constants.O_NOFOLLOW);
    try {
      const st = await fh.stat();
      if ((st.mode & constants.S_IFMT) !== S_IFMT_BY_KIND[e.kind]) {
        throw new SnapfsError('UNSAFE_PATH', `${display}: replaced by something else while restoring; refusing to go on`);
      }
      // chmod through /proc/self/fd/N reaches the inode the descriptor holds, nothing else.
      const self = Buffer.from(`/proc/self/fd/${fh.fd}`);
      if (isRoot) await fs.chown(self, e.uid, e.gid);
      await fs.chmod(self, e.mode);
    } finally {
      await fh.close();
    }
  }

  /** Stored xattrs, through calls that never follow a symlink; a failure is a warning. */
  private applyXattrs(dest: Buffer, e: TreeEntry, display: string): void {
    for (const [name, value] of e.xattrs ?? []) {
      try {
        setXattr(dest, name, value);
      } catch (err) {
        this.stats.warnings.push(`${display}: xattr ${name.toString('utf8')}: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Xattrs and times, then owner and mode when `ownerAndModeSet` is false. Mode comes last:
   * the calls before it go through `dest`, which for a directory is 'N/.' and needs search
   * permission on it (a directory stored as 0644 must still get its times when restored by
   * its non-root owner); times may come first since chown and chmod change ctime, not mtime.
   * Only calls that never follow a symlink take `dest` (lchown, lsetxattr, utimensat with
   * AT_SYMLINK_NOFOLLOW); a mode is only ever set through a descriptor (files, special
   * files) or a descriptor path (directories, the target).
   */
  async applyMeta(dest: Buffer, e: TreeEntry, display: string, ownerAndModeSet = false): Promise<void> {
    this.applyXattrs(dest, e, display);
    const [s, ns] = secondsAndNanos(e.mtimeNs);
    utimensNoFollow(dest, s, ns, s, ns);
    if (!ownerAndModeSet) {
      if (isRoot) await fs.lchown(dest, e.uid, e.gid);
      if (e.kind !== EntryKind.Symlink) await fs.chmod(dest, e.mode);
    }
  }
}
