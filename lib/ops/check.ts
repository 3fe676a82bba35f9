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

import { promises as fs } from 'node:fs';
import { BlobId, idFromHex, idToHex } from '../format/blob-id.js';
import { BLOB_HEADER_BYTES, BlobType, PackedBlob, decodeBlobHeader } from '../format/pack.js';
import { TreeEntry, chunkId, decodeChunkList, decodeTreeNode } from '../format/tree.js';
import { SnapshotRecord } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { BlobLocation } from '../store/blob-index.js';
import { decodeStoredBlob } from '../store/blob-store.js';
import { listPackFiles, readPackTrailer } from '../store/pack-files.js';
import { checkPage } from '../tree/tree-reader.js';
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

class Checker {
  readonly problems: CheckProblem[] = [];
  readonly notes: string[] = [];
  /** Blobs found damaged or unreachable by the pack checks, with why. */
  private readonly badBlobs = new Map<string, string>();
  /** Indexed blobs grouped by pack (hex). */
  private readonly byPack = new Map<string, BlobLocation[]>();
  private readonly packSizes = new Map<string, number>();
  private readonly missingPacks = new Set<string>();
  private readonly cleanTrees = new Set<string>();
  packCount = 0;
  blobCount = 0;
  trees = 0;
  files = 0;
  bytesRead = 0;

  constructor(private readonly repo: Repository, private readonly opts: CheckOptions) {}

  problem(p: CheckProblem): void {
    this.problems.push(p);
  }

  async checkPacks(): Promise<void> {
    const index = this.repo.index;
    for (const p of index.allPacks()) {
      this.packSizes.set(idToHex(p.id), p.size);
      this.byPack.set(idToHex(p.id), []);
    }
    this.packCount = this.packSizes.size;
    let strays = 0;
    for (const b of index.allBlobs()) {
      this.blobCount++;
      const list = this.byPack.get(idToHex(b.pack));
      if (list) list.push(b);
      else {
        strays++;
        this.badBlobs.set(idToHex(b.id), `indexed in pack ${idToHex(b.pack)}, which the index does not list`);
      }
    }
    if (strays > 0) this.problem({ kind: 'index', message: `${strays} blob(s) are indexed in packs the index does not list (run 'snapfs repair index')` });

    const onDisk = new Set(await listPackFiles(this.repo.layout));
    let done = 0;
    for (const [hex, blobs] of this.byPack) {
      this.opts.onProgress?.({ phase: 'packs', done: ++done, total: this.byPack.size, unit: 'packs' });
      if (!onDisk.has(hex)) {
        this.missingPacks.add(hex);
        this.problem({ kind: 'pack', pack: hex, message: `pack ${hex} is missing (${blobs.length} indexed blobs)` });
        for (const b of blobs) this.badBlobs.set(idToHex(b.id), `its pack ${hex} is missing`);
        continue;
      }
      await this.checkTrailer(hex, blobs);
    }
    const unreferenced = [...onDisk].filter((h) => !this.byPack.has(h));
    if (unreferenced.length > 0) {
      this.notes.push(`${unreferenced.length} pack(s) on disk are not in the index (left by an interrupted writer or prune, or being written now); prune removes them`);
    }
  }

  private async checkTrailer(hex: string, blobs: BlobLocation[]): Promise<void> {
    const file = this.repo.layout.packFile(hex);
    let trailer: { size: number; blobs: PackedBlob[] };
    try {
      trailer = await readPackTrailer(file);
    } catch (err) {
      this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: ${stripPrefix((err as Error).message, `pack ${file}`)}` });
      await this.checkHeadersWithoutTrailer(hex, file, blobs);
      return;
    }
    const indexedSize = this.packSizes.get(hex)!;
    if (trailer.size !== indexedSize) {
      this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: ${trailer.size} bytes on disk, the index recorded ${indexedSize}` });
    }
    const listed = new Map<string, PackedBlob>();
    for (const t of trailer.blobs) listed.set(idToHex(t.id), t);
    let disagree = 0;
    for (const b of blobs) {
      const key = idToHex(b.id);
      const t = listed.get(key);
      if (!t || t.offset !== b.offset || t.type !== b.type || t.compression !== b.compression || t.storedLength !== b.storedLength || t.rawLength !== b.rawLength) {
        disagree++;
        this.badBlobs.set(key, `the index places it in pack ${hex} where the pack's trailer ${t ? 'says otherwise' : 'does not list it'}`);
      }
      listed.delete(key);
    }
    if (disagree > 0) this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: trailer and index disagree about ${disagree} blob(s)` });
    let unindexed = 0;
    for (const key of listed.keys()) if (!this.repo.index.has(Buffer.from(key, 'hex'))) unindexed++;
    if (unindexed > 0) this.notes.push(`pack ${hex} holds ${unindexed} blob(s) the index does not list (repair index would add them)`);
  }

  /** Without a trailer, tell which indexed blobs are still there by their own headers. */
  private async checkHeadersWithoutTrailer(hex: string, file: string, blobs: BlobLocation[]): Promise<void> {
    let fh: fs.FileHandle | undefined;
    try {
      fh = await fs.open(file, 'r');
      const { size } = await fh.stat();
      const header = Buffer.alloc(BLOB_HEADER_BYTES);
      for (const b of blobs) {
        const key = idToHex(b.id);
        if (b.offset + BLOB_HEADER_BYTES + b.storedLength > size) {
          this.badBlobs.set(key, `cut off: pack ${hex} is truncated`);
          continue;
        }
        await fh.read(header, 0, BLOB_HEADER_BYTES, b.offset);
        try {
          const h = decodeBlobHeader(header, b.offset, `pack ${hex}`);
          if (!h.id.equals(b.id) || h.storedLength !== b.storedLength) throw new Error('blob header does not match the index');
        } catch (err) {
          this.badBlobs.set(key, `in damaged pack ${hex}: ${(err as Error).message}`);
        }
      }
    } catch (err) {
      for (const b of blobs) this.badBlobs.set(idToHex(b.id), `pack ${hex} unreadable: ${(err as Error).message}`);
    } finally {
      await fh?.close();
    }
  }

  /** Reads every indexed blob of every pack and verifies it. */
  async readData(): Promise<void> {
    let total = 0;
    for (const [hex] of this.byPack) if (!this.missingPacks.has(hex)) total += this.packSizes.get(hex)!;
    for (const [hex, blobs] of this.byPack) {
      if (this.missingPacks.has(hex)) continue;
      let data: Buffer;
      try {
        data = await fs.readFile(this.repo.layout.packFile(hex));
      } catch (err) {
        const why = errnoCode(err) === 'ENOENT' ? 'missing' : (err as Error).message;
        this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: cannot be read: ${why}` });
        for (const b of blobs) this.badBlobs.set(idToHex(b.id), `pack ${hex} cannot be read`);
        continue;
      }
      this.bytesRead += data.length;
      let bad = 0;
      let first = '';
      for (const b of blobs) {
        const stored = data.subarray(b.offset, b.offset + BLOB_HEADER_BYTES + b.storedLength);
        try {
          decodeStoredBlob(this.repo.hasher, b.id, b, stored, b.type);
        } catch (err) {
          bad++;
          const msg = stripPrefix((err as Error).message, '');
          first ||= msg;
          this.badBlobs.set(idToHex(b.id), `corrupt: ${msg}`);
        }
      }
      if (bad > 0) this.problem({ kind: 'pack', pack: hex, message: `pack ${hex}: ${bad} of ${blobs.length} blob(s) fail verification (${first})` });
      this.opts.onProgress?.({ phase: 'read-data', done: this.bytesRead, total, unit: 'bytes' });
    }
  }

  async walkSnapshot(r: SnapshotRecord): Promise<void> {
    const snap = { name: `${r.source}@${r.name}`, id: r.id };
    await this.walkTree(snap, idFromHex(r.root), Buffer.from('/'));
  }

  /** Returns whether the whole subtree is intact. */
  private async walkTree(snap: { name: string; id: string }, id: BlobId, dir: Buffer): Promise<boolean> {
    const key = idToHex(id);
    if (this.cleanTrees.has(key)) return true;
    const entries = await this.readDirectory(snap, id, dir);
    if (!entries) return false;
    let clean = entries.clean;
    for (const e of entries.list) {
      const p = dir.length === 1 ? e.name : Buffer.concat([dir, e.name]);
      if (e.subtree) {
        if (!(await this.walkTree(snap, e.subtree, Buffer.concat([p, Buffer.from('/')])))) clean = false;
      } else if (e.content) {
        this.files++;
        if (!this.checkFile(snap, e, p)) clean = false;
      }
    }
    if (clean) this.cleanTrees.add(key);
    return clean;
  }

  /** A directory's entries (all pages); reports what cannot be read. */
  private async readDirectory(snap: { name: string; id: string }, id: BlobId, dir: Buffer): Promise<{ list: TreeEntry[]; clean: boolean } | undefined> {
    const node = await this.readTreeBlob(snap, id, dir);
    if (!node) return undefined;
    if (node.kind === 'leaf') return { list: node.entries, clean: true };
    const list: TreeEntry[] = [];
    let clean = true;
    let prev: Buffer | undefined;
    for (const page of node.pages) {
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
      list.push(...leaf.entries);
    }
    return { list, clean };
  }

  private async readTreeBlob(snap: { name: string; id: string }, id: BlobId, dir: Buffer) {
    const key = idToHex(id);
    this.trees++;
    this.opts.onProgress?.({ phase: 'trees', done: this.trees, total: 0, unit: 'trees' });
    const known = this.badBlobs.get(key);
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

  private checkFile(snap: { name: string; id: string }, e: TreeEntry, p: Buffer): boolean {
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
      const key = idToHex(id);
      let why = this.badBlobs.get(key);
      if (!why) {
        const loc = this.repo.index.lookup(id);
        if (!loc) why = 'missing from the index';
        else if (loc.type !== BlobType.Data) why = 'indexed as a tree blob';
        else if (loc.rawLength !== list.lengths[i]) why = `is ${loc.rawLength} bytes, the file's chunk list says ${list.lengths[i]}`;
      }
      if (why) {
        bad++;
        first ??= { blob: key, why };
      }
    }
    if (!first) return true;
    const more = bad > 1 ? ` (and ${bad - 1} more damaged chunk(s))` : '';
    this.problem({ kind: 'file', snapshot: snap.name, snapshotId: snap.id, path: p, blob: first.blob, message: `chunk ${first.blob}: ${first.why}${more}` });
    return false;
  }
}

/** Drops a leading "what: " that repeats what the report line already says. */
function stripPrefix(message: string, what: string): string {
  if (what && message.startsWith(`${what}: `)) return message.slice(what.length + 2);
  return message;
}
