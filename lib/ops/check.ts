// Check: is every snapshot fully restorable, and do the packs say what the index says?
//
//   1. snapshot records decode
//   2. every indexed pack exists and its trailer agrees with the index (same blobs at the
//      same places); packs on disk that the index does not list are noted (garbage that
//      prune removes, or a backup's pack about to be committed), not damage
//   3. with readData: every indexed blob is read, decompressed and its keyed id verified
//   4. every snapshot's trees are read (which verifies each tree blob) and every file's
//      chunks are looked up; damage found in 2-3 is reported again by snapshot and path
//
// Trees are content-addressed, so a subtree found intact once is not walked again for
// the next snapshot: the walk costs the number of distinct trees, not snapshots x files.
// Needs no lock: it only reads.
//
// Memory does not grow with the number of blobs: packs are checked one at a time (one
// trailer, or with readData one pack, in memory), big directories are walked one page at a
// time, and what is kept across the whole run is per pack, per damaged blob (16-byte ids
// in flat tables, see util/id-set) or per distinct intact directory (the same, ~21-43
// bytes each).

import { promises as fs } from 'node:fs';
import { BlobId, idFromHex, idToHex } from '../format/blob-id.js';
import { BLOB_HEADER_BYTES, BlobType, PackedBlob, decodeBlobHeader, packTrailerEntries, trailerEntry } from '../format/pack.js';
import { PageRef, TreeEntry, chunkId, decodeChunkList, decodeTreeNode } from '../format/tree.js';
import { SnapshotRecord } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { BlobLocation, LocationList, PackInfo } from '../store/blob-index.js';
import { decodeStoredBlob } from '../store/blob-store.js';
import { listPackFiles, readPackTrailerEntries } from '../store/pack-files.js';
import { checkPage } from '../tree/tree-reader.js';
import { IdMap, IdSet } from '../util/id-set.js';
import { errnoCode } from '../errors.js';

export interface CheckOptions {
  readData?: boolean;
  onProgress?: (p: CheckProgress) => void;
}

export interface CheckProgress {
  phase: 'packs' | 'read-data' | 'trees';
  done: number;
  total: number;
  unit: 'packs' | 'bytes' | 'trees';
}

export type ProblemKind = 'snapshot' | 'index' | 'pack' | 'tree' | 'file';

export interface CheckProblem {
  kind: ProblemKind;
  /** "source@name" of the affected snapshot (tree and file problems). */
  snapshot?: string;
  snapshotId?: string;
  /** Path inside the snapshot, raw bytes; directories end with '/', the root is '/'. */
  path?: Buffer;
  pack?: string;
  blob?: string;
  message: string;
}

export interface CheckResult {
  readData: boolean;
  snapshots: number;
  packs: number;
  blobs: number;
  trees: number;
  files: number;
  bytesRead: number;
  problems: CheckProblem[];
  /** Snapshots with at least one problem, as "source@name". */
  damagedSnapshots: string[];
  /** Facts that are not damage (unreferenced packs, duplicate blobs). */
  notes: string[];
  durationMs: number;
}

export async function check(repo: Repository, opts: CheckOptions = {}): Promise<CheckResult> {
  const started = Date.now();
  repo.index.refresh();
  const c = new Checker(repo, opts);
  const { records, damaged } = await repo.snapshots.load();
  for (const d of damaged) c.problem({ kind: 'snapshot', message: `snapshot record ${d.file}: ${d.error}` });
  await c.checkPacks();
  if (opts.readData) await c.readData();
  for (const r of records) await c.walkSnapshot(r);
  const damagedSnapshots = [...new Set(c.problems.filter((p) => p.snapshot).map((p) => p.snapshot!))];
  return {
    readData: opts.readData ?? false,
    snapshots: records.length + damaged.length,
    packs: c.packCount,
    blobs: c.blobCount,
    trees: c.trees,
    files: c.files,
    bytesRead: c.bytesRead,
    problems: c.problems,
    damagedSnapshots,
    notes: c.notes,
    durationMs: Date.now() - started,
  };
}

/** What the second pass over the index does with the blobs of one pack. */
interface PackFollowUp {
  /** Why each of its blobs is bad, when all are (a missing pack, one the index does not list). */
  allBad?: string;
  /** Its index entries to keep (a pack without a readable trailer: all of them). */
  keep?: LocationList;
  /** Only those its trailer does not list: they are bad, and --read-data reads them too. */
  notIn?: IdSet;
}

class Checker {
  readonly problems: CheckProblem[] = [];
  readonly notes: string[] = [];
  /** Where problem() puts what it is given (see walkPages). */
  private sink = this.problems;
  /** Blobs found damaged or unreachable by the pack checks, with why. */
  private readonly badBlobs = new IdMap();
  /** Indexed packs, in index order. */
  private packs: PackInfo[] = [];
  /** How many blobs the index places in each pack (hex), listed or not. */
  private indexed = new Map<string, number>();
  private readonly missingPacks = new Set<string>();
  private readonly noTrailer = new Set<string>();
  /** Index entries of damaged packs that the trailers do not account for (see PackFollowUp). */
  private readonly unlisted = new Map<string, LocationList>();
  private readonly cleanTrees = new IdSet();
  packCount = 0;
  blobCount = 0;
  trees = 0;
  files = 0;
  bytesRead = 0;

  constructor(private readonly repo: Repository, private readonly opts: CheckOptions) {}

  problem(p: CheckProblem): void {
    this.sink.push(p);
  }

  // One pack at a time: its trailer against what the index says of each blob it lists,
  // and the index's count of blobs in it, so no list of all blobs is ever built. Only the
  // blobs of damaged packs are looked for again, in one more pass over the index.
  async checkPacks(): Promise<void> {
    const index = this.repo.index;
    this.packs = [...index.allPacks()];
    const listed = new Set(this.packs.map((p) => idToHex(p.id)));
    this.packCount = listed.size;
    this.indexed = index.blobsPerPack();
    const followUp = new Map<string, PackFollowUp>();
    let strays = 0;
    for (const [hex, n] of this.indexed) {
      this.blobCount += n;
      if (listed.has(hex)) continue;
      strays += n;
      followUp.set(hex, { allBad: `indexed in pack ${hex}, which the index does not list` });
    }
    if (strays > 0) this.problem({ kind: 'index', message: `${strays} blob(s) are indexed in packs the index does not list (run 'snapfs repair index')` });

    const onDisk = new Set(await listPackFiles(this.repo.layout));
    let done = 0;
    for (const p of this.packs) {
      const hex = idToHex(p.id);
      this.opts.onProgress?.({ phase: 'packs', done: ++done, total: this.packs.length, unit: 'packs' });
      if (!onDisk.has(hex)) {
        this.missingPacks.add(hex);
        this.problem({ kind: 'pack', pack: hex, message: `pack ${hex} is missing (${this.indexed.get(hex) ?? 0} indexed blobs)` });
        followUp.set(hex, { allBad: `its pack ${hex} is missing` });
        continue;
      }
      const f = await this.checkTrailer(p, hex);
      if (f) followUp.set(hex, f);
    }
    const unreferenced = [...onDisk].filter((h) => !listed.has(h));
    if (unreferenced.length > 0) {
      this.notes.push(`${unreferenced.length} pack(s) on disk are not in the index (left by an interrupted writer or prune, or being written now); prune removes them`);
    }

    if (followUp.size === 0) return;
    for (const b of index.blobsIn(followUp)) {
      const hex = idToHex(b.pack);
      const f = followUp.get(hex)!;
      if (f.allBad) this.badBlobs.set(b.id, f.allBad);
      else if (f.keep) f.keep.push(b);
      else if (f.notIn && !f.notIn.has(b.id)) {
        this.badBlobs.set(b.id, `the index places it in pack ${hex} where the pack's trailer does not list it`);
        if (this.opts.readData) this.unlistedOf(hex).push(b);
      }
    }
    for (const [hex, f] of followUp) {
      if (!f.keep) continue;
      await this.checkHeadersWithoutTrailer(hex, this.repo.layout.packFile(hex), f.keep);
      if (!this.opts.readData) this.unlisted.delete(hex); // kept only to be read
    }
  }

  private unlistedOf(hex: string): LocationList {
    let l = this.unlisted.get(hex);
    if (!l) this.unlisted.set(hex, (l = new LocationList()));
    return l;
  }

  /** Compares a pack's trailer with the index; says what the second pass must do, if anything. */
  private async checkTrailer(p: PackInfo, hex: string): Promise<PackFollowUp | undefined> {
    const file = this.repo.layout.packFile(hex);
    let trailer: { size: number; count: number; entries: Buffer };
    try {
      trailer = await readPackTrailerEntries(file);
    } catch (err) {
      this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: ${stripPrefix((err as Error).message, `pack ${file}`)}` });
      this.noTrailer.add(hex);
      return { keep: this.unlistedOf(hex) };
    }
    if (trailer.size !== p.size) {
      this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: ${trailer.size} bytes on disk, the index recorded ${p.size}` });
    }
    let matched = 0;
    let disagree = 0;
    let unindexed = 0;
    const listed = this.eachListed(trailer, (t, loc) => {
      if (!loc) {
        unindexed++;
        return;
      }
      if (!loc.pack.equals(p.id)) return; // kept in another pack too: the index's choice
      matched++;
      if (t.offset !== loc.offset || t.type !== loc.type || t.compression !== loc.compression || t.storedLength !== loc.storedLength || t.rawLength !== loc.rawLength) {
        disagree++;
        this.badBlobs.set(t.id, `the index places it in pack ${hex} where the pack's trailer says otherwise`);
      }
    });
    const notListed = (this.indexed.get(hex) ?? 0) - matched;
    disagree += notListed;
    if (disagree > 0) this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: trailer and index disagree about ${disagree} blob(s)` });
    if (unindexed > 0) this.notes.push(`pack ${hex} holds ${unindexed} blob(s) the index does not list (repair index would add them)`);
    return notListed > 0 ? { notIn: listed } : undefined;
  }

  /**
   * Calls `fn` with each blob a trailer lists, once per id (its last entry, as a reader of
   * the trailer would take), with where the index says it is. Returns the ids.
   */
  private eachListed(trailer: { count: number; entries: Buffer }, fn: (t: PackedBlob, loc: BlobLocation | undefined) => void): IdSet {
    const seen = new IdSet(trailer.count);
    for (let i = trailer.count - 1; i >= 0; i--) {
      const t = trailerEntry(trailer.entries, i);
      if (seen.add(t.id)) fn(t, this.repo.index.lookup(t.id));
    }
    return seen;
  }

  /** Without a trailer, tell which indexed blobs are still there by their own headers. */
  private async checkHeadersWithoutTrailer(hex: string, file: string, blobs: LocationList): Promise<void> {
    let fh: fs.FileHandle | undefined;
    try {
      fh = await fs.open(file, 'r');
      const { size } = await fh.stat();
      const header = Buffer.alloc(BLOB_HEADER_BYTES);
      for (const b of blobs) {
        if (b.offset + BLOB_HEADER_BYTES + b.storedLength > size) {
          this.badBlobs.set(b.id, `cut off: pack ${hex} is truncated`);
          continue;
        }
        await fh.read(header, 0, BLOB_HEADER_BYTES, b.offset);
        try {
          const h = decodeBlobHeader(header, b.offset, `pack ${hex}`);
          if (!h.id.equals(b.id) || h.storedLength !== b.storedLength) throw new Error('blob header does not match the index');
        } catch (err) {
          this.badBlobs.set(b.id, `in damaged pack ${hex}: ${(err as Error).message}`);
        }
      }
    } catch (err) {
      for (const b of blobs) this.badBlobs.set(b.id, `pack ${hex} unreadable: ${(err as Error).message}`);
    } finally {
      await fh?.close();
    }
  }

  /**
   * Reads every indexed blob of every pack and verifies it, one pack in memory at a time:
   * the blobs its trailer lists that the index places there, and those found unlisted.
   */
  async readData(): Promise<void> {
    let total = 0;
    for (const p of this.packs) if (!this.missingPacks.has(idToHex(p.id))) total += p.size;
    const unreadable = new Map<string, string>();
    for (const p of this.packs) {
      const hex = idToHex(p.id);
      if (this.missingPacks.has(hex)) continue;
      const file = this.repo.layout.packFile(hex);
      let data: Buffer;
      let trailer: { count: number; entries: Buffer } | undefined;
      try {
        data = await fs.readFile(file);
        // Read again from the bytes being verified (a pack never changes once sealed).
        if (!this.noTrailer.has(hex)) trailer = packTrailerEntries(data, `pack ${file}`);
      } catch (err) {
        const why = errnoCode(err) === 'ENOENT' ? 'missing' : stripPrefix((err as Error).message, `pack ${file}`);
        this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: cannot be read: ${why}` });
        unreadable.set(hex, `pack ${hex} cannot be read`);
        continue;
      }
      this.bytesRead += data.length;
      let bad = 0;
      let first: { id: Buffer; msg: string } | undefined;
      const verify = (b: PackedBlob, loc: BlobLocation): void => {
        const stored = data.subarray(loc.offset, loc.offset + BLOB_HEADER_BYTES + loc.storedLength);
        try {
          decodeStoredBlob(this.repo.hasher, b.id, loc, stored, loc.type);
        } catch (err) {
          bad++;
          const msg = stripPrefix((err as Error).message, '');
          // The first failure in id order, as a walk of the index would meet it.
          if (!first || Buffer.compare(b.id, first.id) < 0) first = { id: Buffer.from(b.id), msg };
          this.badBlobs.set(b.id, `corrupt: ${msg}`);
        }
      };
      if (trailer) {
        this.eachListed(trailer, (t, loc) => {
          if (loc?.pack.equals(p.id)) verify(t, loc);
        });
      }
      for (const loc of this.unlisted.get(hex) ?? []) verify(loc, loc);
      if (bad > 0) this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: ${bad} of ${this.indexed.get(hex) ?? 0} blob(s) fail verification (${first!.msg})` });
      this.opts.onProgress?.({ phase: 'read-data', done: this.bytesRead, total, unit: 'bytes' });
    }
    if (unreadable.size > 0) for (const b of this.repo.index.blobsIn(unreadable)) this.badBlobs.set(b.id, unreadable.get(idToHex(b.pack))!);
  }

  async walkSnapshot(r: SnapshotRecord): Promise<void> {
    const snap = { name: `${r.source}@${r.name}`, id: r.id };
    await this.walkTree(snap, idFromHex(r.root), Buffer.from('/'));
  }

  /** Returns whether the whole subtree is intact. */
  private async walkTree(snap: Snap, id: BlobId, dir: Buffer): Promise<boolean> {
    if (this.cleanTrees.has(id)) return true;
    const node = await this.readTreeBlob(snap, id, dir);
    if (!node) return false;
    const clean = node.kind === 'leaf' ? await this.walkEntries(snap, dir, node.entries) : await this.walkPages(snap, id, dir, node.pages);
    if (clean) this.cleanTrees.add(id);
    return clean;
  }

  /**
   * A big directory, one page at a time (never its whole listing: a million entries held
   * as objects took ~600 MiB). Problems with the pages themselves are still reported before
   * those found below them, as when the listing was read first.
   */
  private async walkPages(snap: Snap, id: BlobId, dir: Buffer, pages: readonly PageRef[]): Promise<boolean> {
    const outer = this.sink;
    const below: CheckProblem[] = [];
    let clean = true;
    let prev: Buffer | undefined;
    try {
      for (const page of pages) {
        this.sink = outer;
        const leaf = await this.readTreeBlob(snap, page.id, dir);
        if (!leaf) {
          clean = false;
          prev = undefined;
          continue;
        }
        let why = leaf.kind !== 'leaf' ? 'is not a leaf page' : '';
        if (!why && leaf.kind === 'leaf') {
          try {
            checkPage(id, page.firstName, page.count, leaf.entries, prev);
          } catch (err) {
            why = (err as Error).message.replace(/^tree [0-9a-f]+: /, '');
          }
        }
        if (why || leaf.kind !== 'leaf') {
          this.problem({ kind: 'tree', snapshot: snap.name, snapshotId: snap.id, path: dir, blob: idToHex(page.id), message: `tree page ${idToHex(page.id)} does not match its index node (${why})` });
          clean = false;
          prev = undefined;
          continue;
        }
        prev = leaf.entries[leaf.entries.length - 1]?.name ?? prev;
        this.sink = below;
        if (!(await this.walkEntries(snap, dir, leaf.entries))) clean = false;
      }
    } finally {
      this.sink = outer;
    }
    for (const p of below) outer.push(p);
    return clean;
  }

  private async walkEntries(snap: Snap, dir: Buffer, entries: readonly TreeEntry[]): Promise<boolean> {
    let clean = true;
    for (const e of entries) {
      const p = dir.length === 1 ? e.name : Buffer.concat([dir, e.name]);
      if (e.subtree) {
        if (!(await this.walkTree(snap, e.subtree, Buffer.concat([p, Buffer.from('/')])))) clean = false;
      } else if (e.content) {
        this.files++;
        if (!this.checkFile(snap, e, p)) clean = false;
      }
    }
    return clean;
  }

  private async readTreeBlob(snap: Snap, id: BlobId, dir: Buffer) {
    const key = idToHex(id);
    this.trees++;
    this.opts.onProgress?.({ phase: 'trees', done: this.trees, total: 0, unit: 'trees' });
    const known = this.badBlobs.get(id);
    try {
      if (known) throw new Error(known);
      const loc = this.repo.index.lookup(id);
      if (!loc) throw new Error('missing from the index');
      if (loc.type !== BlobType.Tree) throw new Error('indexed as a data blob');
      return decodeTreeNode(await this.repo.blobs.get(id, BlobType.Tree));
    } catch (err) {
      this.problem({ kind: 'tree', snapshot: snap.name, snapshotId: snap.id, path: dir, blob: key, message: `tree ${key}: ${stripPrefix((err as Error).message, `blob ${key}`)}` });
      return undefined;
    }
  }

  private checkFile(snap: Snap, e: TreeEntry, p: Buffer): boolean {
    let list;
    try {
      list = decodeChunkList(e.content!, e.size);
    } catch (err) {
      this.problem({ kind: 'file', snapshot: snap.name, snapshotId: snap.id, path: p, message: `chunk list: ${(err as Error).message}` });
      return false;
    }
    let bad = 0;
    let first: { blob: string; why: string } | undefined;
    for (let i = 0; i < list.count; i++) {
      const id = chunkId(list, i);
      let why = this.badBlobs.get(id);
      if (!why) {
        const loc = this.repo.index.lookup(id);
        if (!loc) why = 'missing from the index';
        else if (loc.type !== BlobType.Data) why = 'indexed as a tree blob';
        else if (loc.rawLength !== list.lengths[i]) why = `is ${loc.rawLength} bytes, the file's chunk list says ${list.lengths[i]}`;
      }
      if (why) {
        bad++;
        first ??= { blob: idToHex(id), why };
      }
    }
    if (!first) return true;
    const more = bad > 1 ? ` (and ${bad - 1} more damaged chunk(s))` : '';
    this.problem({ kind: 'file', snapshot: snap.name, snapshotId: snap.id, path: p, blob: first.blob, message: `chunk ${first.blob}: ${first.why}${more}` });
    return false;
  }
}

type Snap = { name: string; id: string };

/** Drops a leading "what: " that repeats what the report line already says. */
function stripPrefix(message: string, what: string): string {
  if (what && message.startsWith(`${what}: `)) return message.slice(what.length + 2);
  return message;
}
