// The writer: walks a source directory beside the parent snapshot's tree and stores a new
// snapshot. Unchanged files (same size, mtime, ctime, inode) are not opened: their
// entries, chunk lists and `since` are reused. A directory whose entries are all reused
// keeps the parent's tree id. Commit order: packs -> index -> snapshot record.

import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { listXattrs, scanDir, scanDirs, setMmapThreshold, setTrimThreshold, ScanCursor, ScannedEntry } from '../platform/native.js';
import { BlobId, idFromHex, idToHex } from '../format/blob-id.js';
import { EntryKind, TreeEntry, chunkId, compareNames, decodeChunkList, sameVersion } from '../format/tree.js';
import { SnapshotRecord, SnapshotStats, SNAPSHOT_FORMAT_VERSION, publishedAtNs } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { BlobWriter } from '../store/blob-store.js';
import { TreeReader } from '../tree/tree-reader.js';
import { TreeBuilder, writeTree } from '../tree/tree-writer.js';
import { SnapshotCatalog, nextSnapshotName, validateSourceName } from '../snapshot/catalog.js';
import { BatchResult, FileContentReader } from './file-content.js';
import { ExcludeMatcher } from './exclude.js';
import { ParentEntries } from './parent-entries.js';
import { ListingCache } from './listing-cache.js';
import { Semaphore, mapLimit } from '../util/semaphore.js';
import { directoryBase } from '../util/long-path.js';
import { SnapfsError, errnoCode, fromSystemError } from '../errors.js';

export interface BackupOptions {
  source: string;
  path: string;
  excludes?: string[];
  /** Nominal snapshot time (ISO 8601); defaults to the start of the backup. */
  time?: string;
  oneFileSystem?: boolean;
  onProgress?: (stats: Readonly<SnapshotStats>, currentPath: string) => void;
  onWarning?: (w: BackupWarning) => void;
}

export interface BackupWarning {
  path: string;
  code: string;
  message: string;
}

export interface BackupResult {
  snapshot: SnapshotRecord;
  warnings: BackupWarning[];
}

const S_IFMT = 0o170000;
const KIND_BY_FORMAT = new Map<number, EntryKind>([
  [0o100000, EntryKind.File],
  [0o040000, EntryKind.Directory],
  [0o120000, EntryKind.Symlink],
  [0o010000, EntryKind.Fifo],
  [0o020000, EntryKind.CharDevice],
  [0o060000, EntryKind.BlockDevice],
  [0o140000, EntryKind.Socket],
]);

const FILE_CONCURRENCY = 16;
const SUBDIR_CONCURRENCY = 4;
/**
 * Subdirectories listed by one threadpool job ahead of their walk (see listedAsBefore), and
 * the bytes of listings after which that job lists no more (those are listed when walked):
 * sixteen maildirs of 100,000 messages would otherwise be held at once, twice.
 */
const LISTED_TOGETHER = 16;
const LISTED_TOGETHER_BYTES = 8 * 1024 * 1024;
/** Scanned names handled together (in parallel) before their entries go into the tree. */
const WINDOW_ENTRIES = 4096;

/** A scanned name and the parent snapshot's entry of that name. */
interface WorkItem {
  st: ScannedEntry;
  old?: TreeEntry;
  /** Its place in the window. */
  slot: number;
  /** A subdirectory already walked: its tree, or the error that ended the walk. */
  subtree?: BlobId | Error;
}

/**
 * File data read but not yet stored: enough to keep both compression workers busy while
 * the next blocks are read. The rest of the peak RSS (~250-300 MiB: Node.js and its two
 * compression workers, allocator and garbage-collector slack) does not depend on the tree
 * either; test/backup-memory.test.ts holds the whole to a bound.
 */
export const DATA_BUDGET_BYTES = 64 * 1024 * 1024;
/**
 * Buffers of this size and more (read blocks, batches for the workers, their frames, pack
 * buffers) are mapped on their own and unmapped when freed: with glibc's moving threshold
 * its heap fragmented and the peak grew with the size of the backup (430-540 MiB at
 * 2.5 GiB, ~330 MiB at 1 GiB); fixed, both stay near 330. Costs ~8% more system time.
 */
const MMAP_THRESHOLD_BYTES = 1024 * 1024;
/**
 * Free memory at the top of a malloc heap kept for reuse instead of given back at once
 * (glibc's default: 128 KiB). The small files' buffers come and go by the thousand, and
 * each page given back and taken again faults anew; on the test VM (where a page fault is
 * dear) a cold initial backup of the 1 GiB corpus took 5.89-6.74 s against 6.26-7.60 s
 * (system time 2.9-3.3 s against 3.1-4.1 s) for 10-25 MiB more peak RSS.
 */
const TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024;

function emptyStats(): SnapshotStats {
  return {
    files: 0, directories: 0, otherEntries: 0, filesNew: 0, filesChanged: 0, filesUnchanged: 0, filesOpened: 0,
    directoriesUnchanged: 0, entriesChangedRecently: 0, filesFailed: 0, bytesTotal: 0, bytesRead: 0, blobsAdded: 0, dataBlobsAdded: 0, bytesAddedRaw: 0, bytesAddedStored: 0, durationMs: 0,
  };
}

export async function backup(repo: Repository, opts: BackupOptions): Promise<BackupResult> {
  validateSourceName(opts.source);
  const sourceRoot = path.resolve(opts.path);
  let rootStat;
  try {
    rootStat = await fs.stat(sourceRoot, { bigint: true });
  } catch (err) {
    throw new SnapfsError('SOURCE_UNREADABLE', `source directory ${sourceRoot}: ${(err as Error).message}`, { cause: err });
  }
  if (!rootStat.isDirectory()) throw new SnapfsError('SOURCE_UNREADABLE', `source ${sourceRoot} is not a directory`);
  try {
    await fs.access(sourceRoot, fs.constants.R_OK | fs.constants.X_OK);
  } catch (err) {
    throw new SnapfsError('SOURCE_UNREADABLE', `source directory ${sourceRoot}: ${(err as Error).message}`, { cause: err });
  }
  const time = opts.time ?? new Date().toISOString();
  if (Number.isNaN(Date.parse(time))) throw new SnapfsError('INVALID_ARGUMENT', `--time: not an ISO 8601 time: ${JSON.stringify(time)}`);

  setMmapThreshold(MMAP_THRESHOLD_BYTES);
  setTrimThreshold(TRIM_THRESHOLD_BYTES);
  const session = await repo.beginWrite('backup');
  try {
    const catalog = new SnapshotCatalog(repo.snapshots);
    // The records are read while the secret is checked (both mostly wait for the disk);
    // a wrong secret is still the error reported first.
    const latest = catalog.latest(opts.source);
    latest.catch(() => undefined);
    await repo.checkSecret();
    const parent = await latest;
    const generation = (parent?.generation ?? 0) + 1;
    // Whether every chunk the parent references is known to be indexed; if not, each
    // unchanged file's chunks are looked up before its entry is reused.
    const parentVerified = parent !== undefined && repo.index.verifiedSnapshot(opts.source) === parent.id;
    const started = Date.now();
    const walker = new SourceWalker(repo, session.writer, opts, generation, Number(rootStat.dev), parentVerified, BigInt(started) * 1_000_000n);
    const rootId = await walker.directory(Buffer.from(sourceRoot), '', parent ? idFromHex(parent.root) : undefined);
    await session.writer.flush();
    walker.listings.save();

    const stats = walker.stats;
    Object.assign(stats, session.writer.stats, { durationMs: Date.now() - started });
    // Publication time: strictly after the parent's, so `since` orders versions even if
    // the clock stepped back.
    let published = BigInt(Date.now()) * 1_000_000n;
    if (parent && published <= publishedAtNs(parent)) published = publishedAtNs(parent) + 1n;
    const all = await catalog.all();
    const record: SnapshotRecord = {
      version: SNAPSHOT_FORMAT_VERSION,
      id: randomBytes(16).toString('hex'),
      source: opts.source,
      time: new Date(time).toISOString(),
      name: nextSnapshotName(all, opts.source, time),
      root: idToHex(rootId),
      parent: parent?.id ?? null,
      generation,
      generations: { ...(parent?.generations ?? {}), [String(generation)]: published.toString() },
      rootMeta: { mode: Number(rootStat.mode) & 0o7777, uid: Number(rootStat.uid), gid: Number(rootStat.gid), mtimeNs: rootStat.mtimeNs.toString() },
      hostname: os.hostname(),
      paths: [sourceRoot],
      excludes: opts.excludes ?? [],
      partial: stats.filesFailed > 0,
      stats,
    };
    // The commit point: until this rename the snapshot does not exist.
    await repo.snapshots.save(record);
    // Every chunk it references is now indexed: written by this run, or reused from a parent
    // whose chunks were verified. Only a shortcut for the next backup, which checks again
    // if this is not recorded (a full disk, a crash right here).
    await repo.index.setVerifiedSnapshot(opts.source, record.id).catch(() => undefined);
    return { snapshot: record, warnings: walker.warnings };
  } finally {
    await session.close();
  }
}

class SourceWalker {
  readonly stats = emptyStats();
  readonly warnings: BackupWarning[] = [];
  private readonly trees: TreeReader;
  private readonly files: FileContentReader;
  private readonly excludes: ExcludeMatcher;
  private readonly io = new Semaphore(FILE_CONCURRENCY);
  private readonly scans = new Semaphore(8);
  /** Content of multiply-linked files read in this run, by device:inode:ctime. */
  private readonly linked = new Map<string, Promise<TreeEntry | undefined>>();
  readonly listings: ListingCache;
  /**
   * Directories (relative paths) whose listing is not remembered: something in them was
   * warned about, or changed too recently for its times to be trusted.
   */
  private readonly unsettled = new Set<string>();
  private lastProgress = 0;

  constructor(
    repo: Repository,
    private readonly writer: BlobWriter,
    private readonly opts: BackupOptions,
    private readonly generation: number,
    private readonly rootDevice: number,
    /** The parent's chunks are all in the index (see BlobIndex.verifiedSnapshot). */
    private readonly parentVerified: boolean,
    /** Wall clock (ns) before anything was listed or read: see `changedRecently`. */
    private readonly walkStartNs: bigint,
  ) {
    // Each parent node is read once (subdirectories' read ahead, bypassing the cache): a
    // small cache is enough for identical subtrees, and a big one is old-space garbage.
    this.trees = new TreeReader(repo.blobs, 4 * 1024 * 1024);
    this.files = new FileContentReader(writer, repo.gearTable(), repo.config.chunker, DATA_BUDGET_BYTES, this.io);
    this.excludes = new ExcludeMatcher(opts.excludes ?? []);
    this.listings = new ListingCache(repo.index, repo.hasher,
      { excludes: opts.excludes ?? [], oneFileSystem: opts.oneFileSystem ?? false, rootDevice }, parentVerified);
  }

  private warn(relPath: string, err: unknown, what: string): void {
    const code = errnoCode(err) ?? (err as SnapfsError).code ?? 'ERROR';
    const w = { path: relPath, code, message: `${what}: ${(err as Error).message ?? String(err)}` };
    // Whatever was warned about may turn out otherwise next time from the same listing.
    const rel = relPath === '.' ? '' : relPath;
    this.unsettled.add(rel);
    this.unsettled.add(rel.slice(0, Math.max(0, rel.lastIndexOf('/'))));
    this.warnings.push(w);
    this.opts.onWarning?.(w);
  }

  private progress(relPath: string): void {
    const now = Date.now();
    if (this.opts.onProgress && now - this.lastProgress > 250) {
      this.lastProgress = now;
      this.opts.onProgress({ ...this.stats, ...this.writer.stats }, relPath);
    }
  }

  /**
   * Stores one directory and returns its tree id. `listed`: its listing, made already (an
   * error there is met again by listing it here).
   */
  async directory(dirPath: Buffer, rel: string, parentTree: BlobId | undefined, listed?: Buffer | Error): Promise<BlobId> {
    // Deep trees: below PATH_MAX whatever the depth (see lib/util/long-path.ts).
    const base = await directoryBase(dirPath);
    try {
      return await this.directoryAt(base.path, rel, parentTree, listed instanceof Buffer ? listed : undefined);
    } finally {
      await base.close();
    }
  }

  private async directoryAt(abs: Buffer, rel: string, parentTree: BlobId | undefined, listedAlready: Buffer | undefined): Promise<BlobId> {
    const known = parentTree && this.listings.lookup(parentTree);
    // Unless the previous tree may not be needed, its first page is read while the
    // directory is scanned.
    const readPrevious = (): ParentEntries => new ParentEntries(this.trees, parentTree, (err) =>
      this.warn(rel || '.', err, 'the previous snapshot of this directory cannot be read (damaged repository); reading it all again'));
    const early = known ? undefined : readPrevious();
    const listing = listedAlready ?? (await this.scans.run(() => scanDir(abs))); // sorted by name
    let fingerprint: Buffer | undefined;
    let walked: Map<string, BlobId | Error> | undefined;
    if (known && known.fingerprint.equals((fingerprint = this.listings.fingerprint(listing)))) {
      const again = await this.listedAsBefore(abs, rel, listing, known.subtrees);
      if (again === true) return parentTree!;
      walked = again; // a subdirectory changed: this tree is made again, around what was walked
    }
    const previous = early ?? readPrevious();
    const scan = new ScanCursor(listing);
    // Whether every listed name becomes an entry: only then is the listing remembered.
    let listed = 0;
    let excluded = 0;
    let stored = 0;
    const subtrees: BlobId[] = [];
    // Built as it goes, in windows of entries: a directory of a million messages is never
    // held whole. Unchanged, it keeps the parent's tree id.
    // It holds (as long as each entry is the parent's next one, see storeWindow) what the
    // parent's tree can give again.
    const tree = new TreeBuilder(this.writer, parentTree !== undefined, parentTree && (() => this.trees.entries(parentTree)));
    let allReused = parentTree !== undefined;
    // The window's entries in name order: unchanged files are settled at once (their
    // parent entry), the rest are `work` and settled together by `entries`.
    let slots: Array<TreeEntry | undefined> = [];
    let work: WorkItem[] = [];
    const storeWindow = async (): Promise<void> => {
      if (work.length > 0) {
        const results = await this.entries(abs, rel, work);
        for (let k = 0; k < work.length; k++) {
          const e = results[k];
          slots[work[k]!.slot] = e;
          if (e !== work[k]!.old || !e) allReused = false;
        }
      }
      // Held entries must be the parent's first ones, in order: from the first window that
      // is not exactly the parent's next entries (a change, an exclusion, a deletion), the
      // tree is written.
      if (!allReused || previous.skipped) await tree.stopHolding();
      for (const e of slots) {
        if (!e) continue;
        stored++;
        if (e.subtree) subtrees.push(e.subtree);
        const added = tree.add(e);
        if (added) await added;
      }
      slots = [];
      work = [];
    };
    const filterNames = !this.excludes.empty;
    while (scan.next()) {
      listed++;
      let old = previous.match(scan);
      if (old instanceof Promise) old = await old;
      if (filterNames) {
        const name = scan.buf.toString('utf8', scan.nameStart, scan.nameEnd);
        if (this.excludes.excludes(rel ? `${rel}/${name}` : name, name)) {
          excluded++;
          if (old) allReused = false;
          if (old?.subtree) this.trees.dropAhead(old.subtree);
          continue;
        }
      }
      // The common case, before any allocation: an unchanged file keeps its entry.
      if (old && this.unchangedScanned(scan, old)) {
        slots.push(old);
        this.stats.files++;
        this.stats.bytesTotal += old.size;
        this.stats.filesUnchanged++;
      } else {
        const st = scan.entry();
        const subtree = walked?.get(st.name.toString('latin1'));
        if (subtree && old?.subtree) this.trees.dropAhead(old.subtree); // not visited again
        work.push({ st, old, slot: slots.length, subtree });
        slots.push(undefined);
      }
      if (slots.length >= WINDOW_ENTRIES) await storeWindow();
    }
    await storeWindow();
    let id: BlobId;
    if (allReused && !previous.damaged && !(await previous.leftOver())) {
      tree.discard();
      id = parentTree!;
    } else {
      id = await tree.finish();
    }
    if (stored === listed && excluded === 0 && !this.unsettled.has(rel)) {
      this.listings.remember(id, fingerprint ?? this.listings.fingerprint(listing), subtrees);
    }
    return id;
  }

  /**
   * A directory that lists exactly as when its previous tree was made: that tree holds
   * again if each subdirectory (walked all the same: a change may lie deeper) comes back
   * with its previous tree. True then; otherwise what each subdirectory's walk gave (its
   * tree, or the error that ended it) by name in latin1, so that the tree is made again
   * without walking them twice.
   */
  private async listedAsBefore(abs: Buffer, rel: string, listing: Buffer, subtrees: readonly BlobId[]): Promise<true | Map<string, BlobId | Error>> {
    const scan = new ScanCursor(listing);
    let files = 0;
    let bytes = 0;
    let others = 0;
    const subdirs: Array<{ name: Buffer; mountPoint: boolean }> = [];
    while (scan.next()) {
      const type = scan.mode & S_IFMT;
      if (type === 0o100000) {
        files++;
        bytes += scan.size;
      } else if (type === 0o040000) {
        const name = Buffer.from(scan.buf.subarray(scan.nameStart, scan.nameEnd));
        subdirs.push({ name, mountPoint: this.opts.oneFileSystem === true && scan.dev !== this.rootDevice });
      } else {
        others++;
      }
    }
    if (subdirs.length !== subtrees.length) return new Map(); // not as remembered after all: made again
    // Listed a group at a time, the next group while this one is walked: a thread wake-up
    // per directory was most of the time such a walk took.
    const listGroup = (from: number): Promise<Array<Buffer | Error | null>> => {
      const paths = subdirs.slice(from, from + LISTED_TOGETHER).map((d) => childPath(abs, d.name));
      const group = this.scans.run(() => scanDirs(paths, LISTED_TOGETHER_BYTES));
      group.catch(() => undefined); // awaited below
      return group;
    };
    const results: Array<BlobId | Error> = [];
    let next = subdirs.length > 0 ? listGroup(0) : undefined;
    for (let from = 0; from < subdirs.length; from += LISTED_TOGETHER) {
      const listings = await next!;
      next = from + LISTED_TOGETHER < subdirs.length ? listGroup(from + LISTED_TOGETHER) : undefined;
      const group = subdirs.slice(from, from + LISTED_TOGETHER);
      await mapLimit(group, SUBDIR_CONCURRENCY, async ({ name, mountPoint }, k): Promise<void> => {
        const i = from + k;
        if (mountPoint) {
          results[i] = subtrees[i]!; // recorded empty, as before
          return;
        }
        const text = name.toString('utf8');
        try {
          results[i] = await this.directory(childPath(abs, name), rel ? `${rel}/${text}` : text, subtrees[i], listings[k] ?? undefined);
        } catch (err) {
          results[i] = err instanceof Error ? err : new Error(String(err));
        }
      });
    }
    if (results.every((r, i) => !(r instanceof Error) && r.equals(subtrees[i]!))) {
      this.stats.files += files;
      this.stats.filesUnchanged += files;
      this.stats.bytesTotal += bytes;
      this.stats.directories += subdirs.length;
      this.stats.otherEntries += others;
      this.stats.directoriesUnchanged!++;
      return true;
    }
    return new Map(subdirs.map((d, i) => [d.name.toString('latin1'), results[i]!]));
  }

  /** An unchanged file whose chunks are all indexed: its parent entry is reused. */
  private unchangedScanned(scan: ScanCursor, old: TreeEntry): boolean {
    return unchangedScannedFile(scan, old) && this.chunksIndexed(old);
  }

  /** The entries for a window of scanned names, in its order; undefined where skipped. */
  private async entries(abs: Buffer, rel: string, work: readonly WorkItem[]): Promise<Array<TreeEntry | undefined>> {
    const subdirs = work.filter((w) => (w.st.mode & S_IFMT) === 0o040000);
    // Small changed files are read many per threadpool job: for a mail spool, the
    // round trip per file would cost more than the reading.
    const batched = work.filter((w) => this.readsInBatch(w.st, w.old));
    const inBatch = new Set(batched);
    const others = work.filter((w) => (w.st.mode & S_IFMT) !== 0o040000 && !inBatch.has(w));
    const results = new Map<WorkItem, TreeEntry | undefined>();
    const batches: Array<typeof batched> = [];
    for (let i = 0; i < batched.length; i += SMALL_FILE_BATCH) batches.push(batched.slice(i, i + SMALL_FILE_BATCH));
    await Promise.all([
      mapLimit(batches, 2, async (batch) => {
        const read = await this.files.storeBatch(batch.map((w) => childPath(abs, w.st.name)), batch.map((w) => w.st.size));
        for (let k = 0; k < batch.length; k++) {
          const w = batch[k]!;
          results.set(w, await this.entry(abs, rel, w.st, w.old, read[k]));
        }
      }),
      mapLimit(others, FILE_CONCURRENCY, async (w) => results.set(w, await this.entry(abs, rel, w.st, w.old))),
      mapLimit(subdirs, SUBDIR_CONCURRENCY, async (w) => results.set(w, await this.entry(abs, rel, w.st, w.old, undefined, w.subtree))),
    ]);
    return work.map((w) => results.get(w));
  }

  /** A regular, single-link, small file that the parent snapshot does not already hold. */
  private readsInBatch(st: ScannedEntry, old: TreeEntry | undefined): boolean {
    return (
      (st.mode & S_IFMT) === 0o100000 &&
      st.errno === 0 &&
      st.nlink === 1 &&
      st.size <= this.files.smallFileBytes &&
      !(old && unchangedFile(old, st))
    );
  }

  /** Builds the entry for one scanned name; undefined when it is skipped. */
  private async entry(
    dirAbs: Buffer,
    dirRel: string,
    st: ScannedEntry,
    old: TreeEntry | undefined,
    pre?: BatchResult,
    walked?: BlobId | Error,
  ): Promise<TreeEntry | undefined> {
    // The common case first, before any allocation: an unchanged file keeps its entry.
    if (old && st.errno === 0 && (st.mode & S_IFMT) === 0o100000 && unchangedFile(old, st) && this.chunksIndexed(old)) {
      this.stats.files++;
      this.stats.bytesTotal += st.size;
      this.stats.filesUnchanged++;
      return old;
    }
    const abs = childPath(dirAbs, st.name);
    const rel = dirRel ? `${dirRel}/${st.name.toString('utf8')}` : st.name.toString('utf8');
    if (st.errno !== 0) {
      // ENOENT: deleted between readdir and stat, so it is simply not in this snapshot;
      // ENOTDIR: so was its directory, replaced by a file meanwhile.
      if (st.errno !== 2 && st.errno !== 20) {
        this.stats.filesFailed++;
        this.warn(rel, Object.assign(new Error(`lstat failed (errno ${st.errno})`), { code: `errno ${st.errno}` }), 'skipped');
      }
      return undefined;
    }
    const kind = KIND_BY_FORMAT.get(st.mode & S_IFMT);
    if (kind === undefined) return undefined;
    const base: TreeEntry = {
      name: st.name,
      kind,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      size: kind === EntryKind.File || kind === EntryKind.Symlink ? st.size : 0,
      allocated: st.blocks * 512,
      mtimeNs: st.mtimeNs,
      ctimeNs: st.ctimeNs,
      inode: st.ino,
      device: st.dev,
      nlink: st.nlink,
      rdev: st.rdev,
      since: this.generation,
    };
    try {
      let e: TreeEntry | undefined;
      switch (kind) {
        case EntryKind.Directory:
          e = await this.directoryEntry(abs, rel, base, old, walked);
          break;
        case EntryKind.File:
          if (pre instanceof Error) throw pre;
          e = await this.fileEntry(abs, rel, base, old, pre);
          break;
        default:
          e = await this.io.run(() => this.specialEntry(abs, base, old));
      }
      if (e && this.changedRecently(e.ctimeNs)) {
        // Its times cannot tell a later change from this version: marked to be read again.
        this.stats.entriesChangedRecently!++;
        this.unsettled.add(dirRel);
        e = { ...e, ctimeNs: 0n };
      }
      return e;
    } catch (err) {
      const code = errnoCode(err);
      // Vanished while we looked (ENOTDIR: its directory became a file): not in this snapshot.
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      // Replaced by something of another kind (a directory, a symlink: O_NOFOLLOW gives
      // ELOOP) after it was listed: what is there now is new, for the next backup.
      if (code === 'ENOTREG' || code === 'ELOOP') {
        this.warn(rel, err, 'changed type while being read; not in this snapshot');
        return undefined;
      }
      if (err instanceof SnapfsError && err.code !== 'IO_ERROR') throw err; // repository trouble: abort
      if (code === 'ENOSPC' || code === 'EDQUOT') throw fromSystemError(err, rel);
      this.stats.filesFailed++;
      this.warn(rel, err, 'skipped');
      return undefined;
    }
  }

  private async directoryEntry(abs: Buffer, rel: string, base: TreeEntry, old: TreeEntry | undefined, walked?: BlobId | Error): Promise<TreeEntry | undefined> {
    this.stats.directories++;
    if (this.opts.oneFileSystem && base.device !== this.rootDevice) {
      // A mount point: recorded as an empty directory, like tar --one-file-system.
      base.subtree = await writeTree(this.writer, []);
    } else if (walked) {
      if (walked instanceof Error) throw walked;
      base.subtree = walked;
    } else {
      const parentTree = old?.kind === EntryKind.Directory ? old.subtree : undefined;
      base.subtree = await this.directory(abs, rel, parentTree);
    }
    if (old && old.kind === EntryKind.Directory && old.ctimeNs === base.ctimeNs && old.inode === base.inode) {
      base.xattrs = old.xattrs; // ctime unchanged: so are the xattrs
    } else {
      base.xattrs = readXattrs(abs);
    }
    return reuseIfSame(base, old);
  }

  private async fileEntry(abs: Buffer, rel: string, base: TreeEntry, old: TreeEntry | undefined, pre?: Exclude<BatchResult, Error>): Promise<TreeEntry | undefined> {
    this.stats.files++;
    this.stats.bytesTotal += base.size;
    if (old && old.kind === EntryKind.File && sameFileVersion(old, base)) {
      // Unchanged, yet not reused by `entry`: its content is no longer in the repository
      // (lost with a damaged pack and dropped by 'repair index'). Read it again rather than
      // refer to what cannot be read.
      this.warn(rel, new Error('stored content is missing from the repository'), 'read again');
    }
    if (base.nlink > 1) {
      // Hard links: read the inode once per run, then share its content.
      const key = `${base.device}:${base.inode}:${base.ctimeNs}`;
      let shared = this.linked.get(key);
      const first = !shared;
      if (!shared) {
        shared = this.storeFile(abs, rel, base, old);
        this.linked.set(key, shared);
      }
      const e = await shared;
      if (!e) return undefined;
      if (first) return e;
      // Same inode: same data and metadata, different name.
      return reuseIfSame({ ...e, name: base.name }, old);
    }
    return this.storeFile(abs, rel, base, old, pre);
  }

  /**
   * Whether an entry's ctime lies so close to (or after) the start of this walk that a
   * change made after it was read could have left the same ctime: timestamps come from a
   * coarse clock (a tick of 1-10 ms; whole seconds on some file systems, whose times then
   * have no nanoseconds). Such an entry is stored with ctime 0, which no later stat
   * matches, so the next backup reads it again (git calls these entries "racily clean").
   * The source's clock is assumed to be this machine's (see docs/design-notes.md).
   */
  private changedRecently(ctimeNs: bigint): boolean {
    if (ctimeNs === 0n) return false; // already marked
    const window = ctimeNs % 1_000_000_000n === 0n ? WHOLE_SECOND_TIMES_WINDOW_NS : CLOCK_TICK_WINDOW_NS;
    return ctimeNs > this.walkStartNs - window;
  }

  /**
   * Whether every chunk of a parent entry is still in the index. Within one backup they
   * cannot go (prune and repair take the writer lock, and prune keeps whatever a snapshot
   * references); only a rebuilt index ('repair index' after a lost pack) can lack them, and
   * then the parent is not verified and each chunk is looked up.
   */
  private chunksIndexed(old: TreeEntry): boolean {
    if (this.parentVerified) return true;
    let list;
    try {
      list = decodeChunkList(old.content!, old.size);
    } catch {
      return false;
    }
    for (let i = 0; i < list.count; i++) if (!this.writer.has(chunkId(list, i))) return false;
    return true;
  }

  private async storeFile(abs: Buffer, rel: string, base: TreeEntry, old: TreeEntry | undefined, pre?: Exclude<BatchResult, Error>): Promise<TreeEntry | undefined> {
    const onBytes = (n: number): void => {
      this.stats.bytesRead += n;
      this.progress(rel);
    };
    // A file stored by its batch is done; anything else is read under the I/O limit.
    let read;
    if (pre && 'content' in pre) {
      read = pre;
      onBytes(read.bytesRead);
    } else {
      read = await this.io.run(() => this.files.read(abs, onBytes));
    }
    this.stats.filesOpened++;
    const st = read.stat;
    const entry: TreeEntry = {
      ...base,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      size: read.size,
      allocated: st.blocks * 512,
      mtimeNs: st.mtimeNs,
      // A file that kept changing gets ctime 0, so the next backup reads it again.
      ctimeNs: read.unstable ? 0n : st.ctimeNs,
      inode: st.ino,
      nlink: st.nlink,
      content: read.content,
      xattrs: read.xattrs ? sortXattrs(read.xattrs) : readXattrs(abs),
    };
    if (read.unstable) this.warn(rel, new Error('file changed while it was read'), 'stored as last read; will be read again next time');
    if (old && old.kind === EntryKind.File) this.stats.filesChanged++;
    else this.stats.filesNew++;
    return reuseIfSame(entry, old);
  }

  private async specialEntry(abs: Buffer, base: TreeEntry, old: TreeEntry | undefined): Promise<TreeEntry> {
    this.stats.otherEntries++;
    if (base.kind === EntryKind.Symlink) {
      if (old && old.kind === EntryKind.Symlink && old.ctimeNs === base.ctimeNs && old.inode === base.inode && old.mtimeNs === base.mtimeNs) {
        return old;
      }
      base.target = await fs.readlink(abs, { encoding: 'buffer' });
      base.size = base.target.length;
    }
    base.xattrs = readXattrs(abs);
    return reuseIfSame(base, old);
  }
}

const SMALL_FILE_BATCH = 64;
/** How far back from the walk's start a ctime is too recent to trust (changedRecently). */
const CLOCK_TICK_WINDOW_NS = 100_000_000n;
const WHOLE_SECOND_TIMES_WINDOW_NS = 2_000_000_000n;

function childPath(dir: Buffer, name: Buffer): Buffer {
  const out = Buffer.allocUnsafe(dir.length + 1 + name.length);
  dir.copy(out, 0);
  out[dir.length] = 0x2f; // '/'
  name.copy(out, dir.length + 1);
  return out;
}

/** The unchanged-file rule: same size, mtime, ctime, inode and device: not opened. */
function sameFileVersion(old: TreeEntry, now: Pick<TreeEntry, 'size' | 'mtimeNs' | 'ctimeNs' | 'inode' | 'device'>): boolean {
  return old.size === now.size && old.mtimeNs === now.mtimeNs && old.ctimeNs === now.ctimeNs && old.inode === now.inode && old.device === now.device;
}

function unchangedFile(old: TreeEntry, st: ScannedEntry): boolean {
  return old.kind === EntryKind.File && sameFileVersion(old, { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, inode: st.ino, device: st.dev });
}

/**
 * The unchanged-file rule of `unchangedFile`, read straight from the scan's current record
 * (no ScannedEntry made): a regular file, stat'ed without error, whose size, mtime, ctime,
 * inode and device are exactly those of the parent's file entry.
 */
export function unchangedScannedFile(scan: ScanCursor, old: TreeEntry): boolean {
  return (
    old.kind === EntryKind.File &&
    scan.errno === 0 &&
    (scan.mode & S_IFMT) === 0o100000 &&
    scan.size === old.size &&
    scan.dev === old.device &&
    scan.inoIs(old.inode) &&
    scan.mtimeIs(old.mtimeNs) &&
    scan.ctimeIs(old.ctimeNs)
  );
}

/**
 * Returns the parent's entry object when nothing differs, so `since` carries forward. A
 * parent entry marked to be read again (ctime 0) is the same version when all else is.
 */
function reuseIfSame(entry: TreeEntry, old: TreeEntry | undefined): TreeEntry {
  if (!old) return entry;
  if (old.ctimeNs === 0n && entry.ctimeNs !== 0n) {
    return sameVersion({ ...entry, ctimeNs: 0n }, old) ? { ...entry, since: old.since } : entry;
  }
  return sameVersion(entry, old) ? old : entry;
}

function readXattrs(abs: Buffer): Array<[Buffer, Buffer]> | undefined {
  return sortXattrs(listXattrs(abs));
}

function sortXattrs(list: Array<[Buffer, Buffer]>): Array<[Buffer, Buffer]> | undefined {
  if (list.length === 0) return undefined;
  return list.sort((a, b) => compareNames(a[0], b[0]));
}
