// The mount's operations over snapfs's own libfuse low-level binding (lib/platform/
// libfuse.ts): the kernel names inodes by the VFS's node ids, names travel as raw bytes,
// times keep their nanoseconds and inode numbers their 64 bits. Every request is answered
// asynchronously; errors become errno in errnoOf only. Timeouts are per reply: snapshot
// content is immutable and cached for long, while the root, source directories and
// `last` are revalidated within a second so new snapshots appear and `last` moves.
//
// Replies also tell the binding what it may answer itself, on its own thread, without
// waking this one (ReplyCaching): the attributes of snapshot content (immutable, and a
// node id is a hash of (snapshot id, path), so an id names the same entry after forget;
// in the rare collision of two hashes the VFS refuses the later entry and the binding
// answers no name listed under an id that meanwhile names another entry), which nodes
// have no xattrs, and symlink targets.
// And lookups: once a lookup in a directory of snapshot content came here, its further
// readdir replies carry each name's node, so the `ls -l`-style lookups that follow a
// listing are answered by the binding and only reported here (ref), in batches.

import os from 'node:os';
import { FilesAhead, Vfs, VfsAttr, isShownXattrName } from '../read/vfs.js';
import { StoredChunk } from '../read/file-reader.js';
import {
  DIRENTPLUS_MIN_BYTES,
  FuseAttr,
  FuseRequest,
  LowLevelHandlers,
  ReplyCaching,
  replyAttr,
  replyBuf,
  replyDirents,
  replyEntry,
  replyErr,
  replyNoEntry,
  replyOk,
  replyOpen,
  replyReadlink,
  replyStatfs,
  replyXattrSize,
} from '../platform/libfuse.js';
import { errnoOf, isWorthLogging } from './errno.js';

/**
 * Directories remembered as "looked up in after a listing", whose readdir replies then
 * carry nodes; beyond this many the set starts over (a plain listing stays plain).
 */
const LISTED_LOOKUP_DIRS = 65536;
/** How long after a file lookup a walk is taken to be stat-ing every name (see statWalkAt). */
const STAT_WALK_MS = 2000;
/** The least room a plain readdir entry takes (fuse_dirent with a short name). */
const DIRENT_MIN_BYTES = 32;

/** Seconds the kernel may cache immutable snapshot content (attributes, names, negatives). */
export const CONTENT_TIMEOUT_S = 3600;
/** Seconds for the root, source directories and `last`: they change as backups commit. */
export const LIVE_TIMEOUT_S = 1;
/**
 * Seconds the binding repeats `last`'s target without asking: every path walk through
 * `last` (each stat of `last/...`) reads it, so this turns thousands of round trips per
 * second into four, and delays a moving `last` by at most this much.
 */
export const LIVE_LINK_REUSE_S = 0.25;

const E = os.constants.errno;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

function toFuseAttr(a: VfsAttr): FuseAttr {
  return {
    ino: a.ino,
    mode: a.mode,
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    rdev: a.rdev,
    size: a.size,
    blksize: a.blksize,
    blocks: a.blocks,
    atimeNs: a.atimeNs,
    mtimeNs: a.mtimeNs,
    ctimeNs: a.ctimeNs,
  };
}

export interface LowLevelOptions {
  /** A line for the log, for errors other than the ordinary "no such file" kind. */
  log?: (line: string) => void;
  /** Let the binding answer repeated questions itself (default true; false to compare or rule it out). */
  replyCaching?: boolean;
  /**
   * Hands the binding where a file's chunks are stored, for reads it answers itself once
   * it assembled and verified them (FuseSession.offerStoredContent).
   */
  offerStoredContent?: (node: bigint, ino: bigint, size: number, chunks: readonly StoredChunk[]) => boolean;
  /**
   * Hands the binding where the chunks of a stretch of a large file being read through are
   * stored, for reads it answers itself from the chunks it loads ahead (FuseSession.offerStream).
   */
  offerStream?: (node: bigint, ino: bigint, size: number, reached: number, chunks: readonly StoredChunk[], extend: boolean) => boolean;
  /**
   * Whether the kernel's page cache holds a file's whole content, pushed there by the
   * binding (FuseSession.contentPushed): such a file is not read ahead again. A second walk
   * (diff -r then cp -a, find right after tar) would otherwise have the binding read,
   * decompress and push every file once more.
   */
  contentPushed?: (node: bigint) => boolean;
}

/**
 * Reading ahead across files, once two files of one directory were read from their start
 * one after the other (tar, cp -a, rsync; not a reader picking files here and there): the
 * files after the second, up to 4 MiB each, handed to the binding, which assembles them on
 * threads of its own (16 MiB at a time), pushes them into the page cache and keeps up to
 * 4 MiB of them for the reads that still come. A tape job's tar of a mail spool then has
 * most files read without a trip to JS.
 */
const FILES_AHEAD = { files: 64, bytes: 8 * 1024 * 1024, fileBytes: 4 * 1024 * 1024, entries: 256 };
/**
 * While such a walk goes on (files were read ahead until WALK_AHEAD_MS ago), the first
 * file it reads in the next directory starts the read-ahead there: the walk is already
 * known, and waiting for the second file costs a trip to JS per directory.
 */
const WALK_AHEAD_MS = 2000;
/** Files offered recently (not offered again while the binding may still hold them). */
const OFFERED_MAX = 4096;
/**
 * Streaming a large file (one the read-ahead across files leaves out): read from its start
 * (the way cat, cp, tar and rsync read), its chunks are handed to the binding a stretch at
 * a time (each chunk costs the binding a descriptor until it is loaded), and the binding
 * answers its reads from chunks it loads a few MiB ahead of the reader. The next stretch is
 * added when the binding starts loading the last chunk of one (streamEnding), or, should
 * the reader get past it first, offered when its read comes near the stretch's end. A
 * reader that starts elsewhere, or jumps, is answered by JS.
 */
const STREAM = { minFileBytes: FILES_AHEAD.fileBytes, stretchBytes: 32 * 1024 * 1024, slackBytes: 8 * 1024 * 1024, files: 64 };

export function lowLevelHandlers(vfs: Vfs, opts: LowLevelOptions = {}): LowLevelHandlers {
  const timeout = (id: bigint): number => (vfs.isSnapshotContent(id) ? CONTENT_TIMEOUT_S : LIVE_TIMEOUT_S);
  const reuse = opts.replyCaching ?? true;
  const caching = (id: bigint): ReplyCaching =>
    reuse ? { immutable: vfs.isSnapshotContent(id), noXattrs: vfs.cachedXattrs(id)?.length === 0 } : {};
  // Directories of content where lookups reached us: their listings carry every entry's
  // node. Elsewhere only subdirectories' (every walk descends into them): `find`, `ls -f`
  // and other plain listings look up no file, so they do not pay for nodes they would not use.
  const lookedUpIn = new Set<bigint>();
  // A walk that stats every name (tar, ls -lR, cp -a, rsync) looks up files, not only the
  // directories it descends into (find, ls -R). While one runs (a file was looked up in
  // the last STAT_WALK_MS, here or by the binding, or a listing carried every node), every
  // directory listed carries all its nodes, and the marks pass down through such
  // listings, whose lookups never reach us.
  let statWalkAt = -Infinity;
  const mark = (id: bigint): void => {
    if (lookedUpIn.size >= LISTED_LOOKUP_DIRS) lookedUpIn.clear();
    lookedUpIn.add(id);
  };

  let readingAhead = false;
  let readAheadAt = -Infinity;
  let lastReadDir: bigint | undefined;
  const offered = new Set<bigint>();
  /** One pass at a time: the binding assembles what a pass hands it, FETCH_BUDGET at a time. */
  const readAhead = (run: (pass: FilesAhead) => Promise<void>): void => {
    const offer = opts.offerStoredContent!;
    readingAhead = true;
    readAheadAt = performance.now();
    run({
      limits: FILES_AHEAD,
      skip: (file) => offered.has(file) || (opts.contentPushed?.(file) ?? false),
      use: (file, ino, size, chunks) => {
        if (offered.size >= OFFERED_MAX) offered.clear();
        offered.add(file);
        return offer(file, ino, size, chunks);
      },
    })
      .catch(() => undefined) // a damaged file fails when the reader itself reads it
      .finally(() => {
        readingAhead = false;
        readAheadAt = performance.now();
      });
  };
  const walking = (): boolean => performance.now() - readAheadAt < WALK_AHEAD_MS;
  const readFilesAfter = (id: bigint): void => {
    const dir = vfs.directoryOf(id);
    const inOrder = dir !== undefined && dir === lastReadDir;
    lastReadDir = dir;
    if (!opts.offerStoredContent || !reuse || readingAhead || !(inOrder || (dir !== undefined && walking()))) return;
    readAhead((pass) => vfs.readFilesAfter(id, pass));
  };
  /**
   * A directory listed with its nodes while such a walk goes on: its files are read ahead
   * from the first one, which the walk would otherwise read through JS (the kernel knows
   * the nodes from the listing, so they can be pushed).
   */
  const readFilesIn = (dir: bigint): void => {
    if (!opts.offerStoredContent || !reuse || readingAhead || !walking()) return;
    readAhead((pass) => vfs.readFilesIn(dir, pass));
  };

  /** Where each streamed file's last stretch ends, for the few streamed most recently. */
  const stretchEnds = new Map<bigint, number>();
  const offeringStretch = new Set<bigint>();
  /** Offers the stretch of file `id` from `offset`: a new stream (the reader at `reached`), or the next stretch of its stream. */
  const offerStretch = (id: bigint, offset: number, reached: number, extend: boolean): void => {
    const offer = opts.offerStream!;
    offeringStretch.add(id);
    vfs
      .storedStretch(id, offset, STREAM.stretchBytes, STREAM.minFileBytes)
      .then((stretch) => {
        if (!stretch || !offer(id, stretch.ino, stretch.size, Math.min(reached, stretch.size), stretch.chunks, extend)) return;
        stretchEnds.delete(id); // most recent last
        if (stretchEnds.size >= STREAM.files) stretchEnds.delete(stretchEnds.keys().next().value!);
        stretchEnds.set(id, stretch.end);
      })
      .catch(() => undefined) // a damaged chunk fails when the reader itself reads it
      .finally(() => offeringStretch.delete(id));
  };
  const streamFile = (id: bigint, offset: number, size: number): void => {
    if (!opts.offerStream || !reuse || offeringStretch.has(id)) return;
    // Most reads that reach JS are of small files: those cost no promise here.
    const known = vfs.knownFileSize(id);
    if (known !== undefined && known <= STREAM.minFileBytes) return;
    const end = stretchEnds.get(id);
    const next = end !== undefined && offset >= end - STREAM.slackBytes && offset < end + STREAM.slackBytes;
    if (offset === 0 || next) offerStretch(id, offset, offset + size, false);
  };
  const streamEnding = (id: bigint, end: number): void => {
    if (opts.offerStream && !offeringStretch.has(id) && stretchEnds.get(id) === end) offerStretch(id, end, 0, true);
  };

  /** Runs one request; any failure is answered with its errno (and logged if unusual). */
  const run = (op: string, req: FuseRequest, fn: () => Promise<void>): Promise<void> =>
    fn().catch((err: unknown) => {
      const errno = -errnoOf(err);
      if (isWorthLogging(-errno)) opts.log?.(`${op}: ${(err as Error).message ?? String(err)}`);
      replyErr(req, errno);
    });

  return {
    lookup: (req, parent, name) =>
      run('lookup', req, async () => {
        let found;
        try {
          found = await vfs.lookup(parent, name);
        } catch (err) {
          // A missing name in immutable content stays missing: let the kernel remember.
          if (errnoOf(err) === -E.ENOENT && vfs.isSnapshotContent(parent)) {
            replyNoEntry(req, CONTENT_TIMEOUT_S);
            return;
          }
          throw err;
        }
        const t = timeout(found.id);
        if (reuse && t === CONTENT_TIMEOUT_S) {
          if (!lookedUpIn.has(parent)) mark(parent);
          if ((found.attr.mode & S_IFMT) !== S_IFDIR) statWalkAt = performance.now();
          else if (performance.now() - statWalkAt < STAT_WALK_MS) mark(found.id);
        }
        vfs.ref(found.id);
        const taken = replyEntry(req, { ino: found.id, attr: toFuseAttr(found.attr), attrTimeout: t, entryTimeout: t, ...caching(found.id) });
        if (!taken) vfs.forget(found.id, 1); // interrupted: the kernel holds no reference
      }),

    forget: (ino, nlookup) => vfs.forget(ino, nlookup),

    streamEnding,

    ref: (ino, parent, name, fromListing) => {
      if (!fromListing) statWalkAt = performance.now(); // lookups after a listing: a walk that stats names
      try {
        vfs.refChild(parent, name, ino);
      } catch (err) {
        // Cannot happen while the kernel holds the parent; requests for ino would fail.
        opts.log?.(`ref: ${(err as Error).message}`);
      }
    },

    getattr: (req, ino) =>
      run('getattr', req, async () => {
        replyAttr(req, toFuseAttr(await vfs.getattr(ino)), timeout(ino), caching(ino));
      }),

    readlink: (req, ino) =>
      run('readlink', req, async () => {
        const target = await vfs.readlink(ino);
        replyReadlink(req, target, !reuse ? 0 : vfs.isSnapshotContent(ino) ? CONTENT_TIMEOUT_S : LIVE_LINK_REUSE_S);
      }),

    open: (req, ino, flags) =>
      run('open', req, async () => {
        const fh = await vfs.open(ino, flags);
        // Content never changes: pages cached by an earlier open stay valid.
        if (!replyOpen(req, fh, { keepCache: true })) vfs.release(fh);
      }),

    read: (req, ino, size, offset, fh) =>
      run('read', req, async () => {
        // replyBuf hands the bytes to the kernel before it returns.
        const send = (data: Buffer): boolean => replyBuf(req, data);
        // fh 0: opened by the binding itself (OPENED_BY_BINDING in fuse_ll.c). A large file
        // is offered for streaming before this read is answered: the reads the kernel sends
        // next then find its chunks loading already.
        if (fh === 0) streamFile(ino, offset, size);
        await (fh === 0 ? vfs.readNode(ino, offset, size, send) : vfs.read(fh, offset, size, send));
        if (fh === 0 && offset === 0) readFilesAfter(ino);
      }),

    release: (req, _ino, fh) =>
      run('release', req, async () => {
        vfs.release(fh);
        replyOk(req);
      }),

    readdir: (req, ino, size, offset, _fh, plus) =>
      run('readdir', req, async () => {
        // Never fetch more than can be sent. Subdirectories always go with their nodes: every
        // walk (find, ls -R, du) descends into them, and the kernel then needs no lookup.
        const nodes = reuse && (lookedUpIn.has(ino) || performance.now() - statWalkAt < STAT_WALK_MS);
        if (nodes) statWalkAt = performance.now();
        const most = Math.max(1, Math.floor(size / (plus ? DIRENTPLUS_MIN_BYTES : DIRENT_MIN_BYTES)));
        const page = await vfs.readdir(ino, offset, most, { nodes: !reuse ? undefined : nodes ? 'all' : 'directories' });
        if (nodes) for (const e of page.entries) if (e.node && (e.node.attr.mode & S_IFMT) === S_IFDIR) mark(e.node.id);
        // The directory's last entries: the kernel's next readdir, for its end, is answered
        // without us (one round trip a directory).
        const end = reuse && page.next === undefined && vfs.isSnapshotContent(ino) ? { dirIno: page.ino } : undefined;
        replyDirents(
          req,
          size,
          page.entries.map((e, i) => ({
            name: e.name,
            ino: e.ino,
            mode: e.type,
            nextOffset: offset + i + 1,
            // Checked again now: lookups answered while the page was read may have given the id to another entry.
            node: e.node && vfs.mayGiveListed(ino, e.name, e.node.id) ? { ino: e.node.id, attr: toFuseAttr(e.node.attr), timeout: CONTENT_TIMEOUT_S, noXattrs: e.node.noXattrs } : undefined,
          })),
          end,
        );
        if (nodes && plus && offset === 0) readFilesIn(ino);
      }),

    statfs: (req) =>
      run('statfs', req, async () => {
        const s = await vfs.statfs();
        const bsize = 4096;
        replyStatfs(req, { bsize, frsize: bsize, blocks: Math.ceil(s.bytes / bsize), bfree: 0, bavail: 0, files: s.snapshots, ffree: 0, namemax: s.nameMax });
      }),

    getxattr: (req, ino, name, size) =>
      run('getxattr', req, async () => {
        if (!isShownXattrName(name)) {
          replyErr(req, E.EOPNOTSUPP); // see isShownXattrName
          return;
        }
        const value = await vfs.getxattr(ino, name);
        if (!value) replyErr(req, E.ENODATA);
        else if (size === 0) replyXattrSize(req, value.length);
        else if (value.length > size) replyErr(req, E.ERANGE);
        else replyBuf(req, value);
      }),

    listxattr: (req, ino, size) =>
      run('listxattr', req, async () => {
        const names = await vfs.listxattr(ino);
        const list = Buffer.concat(names.flatMap((n) => [n, Buffer.from([0])]));
        if (size === 0) replyXattrSize(req, list.length);
        else if (list.length > size) replyErr(req, E.ERANGE);
        else replyBuf(req, list);
      }),
  };
}
