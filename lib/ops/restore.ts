// Restores a snapshot (or one path of it) into a target directory with full metadata.
// Safety: the target must be new or empty and not a symlink; every name comes from a
// validated tree (one path component, never '.' or '..'); files are created with
// O_EXCL|O_NOFOLLOW and directories are checked after mkdir, so nothing is ever written
// through a symlink, including one this restore has just created.

import { promises as fs, constants } from 'node:fs';
import path from 'node:path';
import { mknod, setXattr, utimensNoFollow } from '../platform/native.js';
import { idFromHex } from '../format/blob-id.js';
import { EntryKind, TreeEntry } from '../format/tree.js';
import { SnapshotRecord } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { TreeReader, pathComponents } from '../tree/tree-reader.js';
import { FileReader } from '../read/file-reader.js';
import { SnapfsError, errnoCode, fromSystemError } from '../errors.js';
import { baseDescriptor, directoryBase } from '../util/long-path.js';

const SLASH = Buffer.from('/');

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

export async function restore(repo: Repository, snap: SnapshotRecord, target: string, opts: RestoreOptions = {}): Promise<RestoreStats> {
  const trees = new TreeReader(repo.blobs);
  const files = new FileReader(repo.blobs);
  const stats: RestoreStats = { files: 0, directories: 0, others: 0, bytes: 0, warnings: [] };
  const targetAbs = path.resolve(target);
  await prepareTarget(targetAbs);
  const r = new Restorer(trees, files, stats, opts);
  try {
    const components = pathComponents(opts.subPath ?? '');
    const rootId = idFromHex(snap.root);
    if (components.length === 0) {
      await r.directoryContents(rootId, Buffer.from(targetAbs));
      const m = snap.rootMeta;
      await r.applyMeta(Buffer.from(targetAbs), {
        kind: EntryKind.Directory, mode: m.mode, uid: m.uid, gid: m.gid, mtimeNs: BigInt(m.mtimeNs),
      } as TreeEntry);
    } else {
      const { entry } = await trees.resolve(rootId, components, `${snap.source}@${snap.name}:${opts.subPath}`);
      // Like cp: restoring users/bob creates TARGET/bob.
      await r.entry(entry!, Buffer.concat([Buffer.from(targetAbs + '/'), entry!.name]));
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

  constructor(
    private readonly trees: TreeReader,
    private readonly files: FileReader,
    private readonly stats: RestoreStats,
    private readonly opts: RestoreOptions,
  ) {}

  /** Descriptors behind /proc/self/fd paths that a hard link may still need (closed at the end). */
  private readonly pinned = new Map<number, () => Promise<void>>();

  /** `shown`: the directory's real path, for messages (`dir` may be a /proc/self/fd path). */
  async directoryContents(treeId: Buffer, dir: Buffer, shown: Buffer = dir): Promise<void> {
    // Deep trees: below PATH_MAX whatever the depth (see lib/util/long-path.ts). The
    // directory is opened with O_NOFOLLOW, so the descriptor is the directory just made.
    const base = await directoryBase(dir);
    try {
      for await (const e of this.trees.entries(treeId)) {
        await this.entry(e, Buffer.concat([base.path, SLASH, e.name]), Buffer.concat([shown, SLASH, e.name]));
      }
    } finally {
      if (base.fd !== undefined && this.pinned.has(base.fd)) this.pinned.set(base.fd, base.close);
      else await base.close();
    }
  }

  async close(): Promise<void> {
    for (const close of this.pinned.values()) await close();
    this.pinned.clear();
  }

  /** Creates `dest` (which must not exist) from `e`, recursively for directories. */
  async entry(e: TreeEntry, dest: Buffer, shown: Buffer = dest): Promise<void> {
    const display = shown.toString('utf8');
    try {
      switch (e.kind) {
        case EntryKind.Directory: {
          await fs.mkdir(dest, { mode: 0o700 });
          const st = await fs.lstat(dest);
          if (!st.isDirectory()) throw new SnapfsError('UNSAFE_PATH', `${display}: not a directory after mkdir`);
          this.stats.directories++;
          await this.directoryContents(e.subtree!, dest, shown);
          break;
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
          mknod(dest, S_IFMT_BY_KIND[e.kind]! | (e.mode & 0o777), e.rdev);
          this.stats.others++;
      }
      await this.applyMeta(dest, e);
      this.opts.onProgress?.(this.stats, display);
    } catch (err) {
      if (err instanceof SnapfsError) throw err;
      throw fromSystemError(err, `restoring ${display}`);
    }
  }

  private async file(e: TreeEntry, dest: Buffer): Promise<void> {
    const fh = await fs.open(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      const file = this.files.open(e);
      // Write only the stored chunks: the gaps between them stay holes.
      for (let i = 0; i < file.chunks.count; i++) {
        const data = await this.files.chunk(file, i);
        await fh.write(data, 0, data.length, file.chunks.offsets[i]!);
        this.stats.bytes += data.length;
      }
      await fh.truncate(e.size);
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

  /** Owner, mode, xattrs, then times (last, since the others change ctime not mtime). */
  async applyMeta(dest: Buffer, e: TreeEntry): Promise<void> {
    if (isRoot) await fs.lchown(dest, e.uid, e.gid);
    // chown clears setuid/setgid, so the mode goes after it; symlinks have no mode.
    if (e.kind !== EntryKind.Symlink) await fs.chmod(dest, e.mode);
    for (const [name, value] of e.xattrs ?? []) {
      try {
        setXattr(dest, name, value);
      } catch (err) {
        this.stats.warnings.push(`${dest.toString('utf8')}: xattr ${name.toString('utf8')}: ${(err as Error).message}`);
      }
    }
    const sec = e.mtimeNs / 1_000_000_000n;
    const nsec = e.mtimeNs - sec * 1_000_000_000n;
    const s = nsec < 0n ? sec - 1n : sec;
    const ns = nsec < 0n ? nsec + 1_000_000_000n : nsec;
    utimensNoFollow(dest, Number(s), Number(ns), Number(s), Number(ns));
  }
}
