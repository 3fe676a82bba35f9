// Prune: frees the blobs no remaining snapshot reaches.
//
//   1. mark   walk every snapshot's trees: tree blobs and file chunks are live
//   2. plan   per pack: no live blob -> delete; live fraction below the threshold ->
//             repack (copy its live blobs into new packs); else keep as is
//   3. sweep  in batches: copy live blobs (verified) into new packs, seal + fsync them,
//             commit one index transaction that points the moved blobs at the new packs
//             and drops the old packs and their dead blobs, wait until it is on disk,
//             and only then unlink the old pack files
//
// A reader (the mount, another process, no lock) that still has an old location gets
// ENOENT and looks the blob up again (BlobReader.get); a file open on a removed snapshot
// may fail, never read wrong bytes since every read verifies the blob's id. Killed at
// any moment, the repository stays valid: new packs not yet committed and old packs not
// yet unlinked are only unreferenced files, which the next prune deletes.
//
// Memory: the live set is a Set of hex ids (about 100 bytes per live blob: ~1 GB for 10
// million blobs), plus the blob lists of the packs being deleted or repacked in this run.

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BlobId, idFromHex, idToHex } from '../format/blob-id.js';
import { BLOB_HEADER_BYTES, BlobType, trailerEntry } from '../format/pack.js';
import { decodeChunkList, decodeTreeNode, chunkId } from '../format/tree.js';
import { SnapshotRecord } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { BlobLocation } from '../store/blob-index.js';
import { decodeStoredBlob } from '../store/blob-store.js';
import { PackWriter, SealedPack, listPackFiles, readPackTrailerEntries } from '../store/pack-files.js';
import { fsyncDir } from '../store/files.js';
import { SnapfsError, errnoCode, fromSystemError } from '../errors.js';

export const DEFAULT_REPACK_THRESHOLD = 0.5;
export const DEFAULT_MAX_UNUSED = 0.05;

export interface PruneOptions {
  dryRun?: boolean;
  /** Repack a pack when its live bytes are below this fraction of its size (0..1). */
  repackThreshold?: number;
  /**
   * After the threshold rule, also repack the sparsest remaining packs until the dead bytes
   * left in kept packs are at most this fraction of the live bytes (0..1). Without it, packs
   * just above the threshold could keep the repository up to twice the size of its data.
   */
  maxUnused?: number;
  onProgress?: (p: PruneProgress) => void;
}

export interface PruneProgress {
  phase: 'mark' | 'repack' | 'delete';
  done: number;
  total: number;
  unit: 'trees' | 'bytes' | 'packs';
}

export interface PruneResult {
  dryRun: boolean;
  snapshots: number;
  blobs: { total: number; live: number; removed: number; moved: number };
  packs: { before: number; deleted: number; repacked: number; kept: number; written: number; unreferenced: number; after: number };
  bytes: { before: number; after: number; freed: number; copied: number };
  durationMs: number;
  warnings: string[];
}

interface PackPlan {
  hex: string;
  size: number;
  liveBytes: number;
  liveCount: number;
  deadCount: number;
  deadBytes: number;
  onDisk: boolean;
  action: 'keep' | 'delete' | 'repack';
  live: BlobLocation[];
  dead: BlobId[];
}

/** Old packs dealt with per index transaction (bounds memory and the size of one commit). */
const BATCH_PACKS = 64;
const BATCH_COPY_BYTES = 256 * 1024 * 1024;
const BATCH_REMOVED_BLOBS = 200_000;

export async function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneResult> {
  const threshold = opts.repackThreshold ?? DEFAULT_REPACK_THRESHOLD;
  if (!(threshold >= 0 && threshold <= 1)) throw new SnapfsError('INVALID_ARGUMENT', `--repack-threshold must be between 0 and 1, got ${threshold}`);
  const maxUnused = opts.maxUnused ?? DEFAULT_MAX_UNUSED;
  if (!(maxUnused >= 0 && maxUnused <= 1)) throw new SnapfsError('INVALID_ARGUMENT', `--max-unused must be between 0 and 1, got ${maxUnused}`);
  const dryRun = opts.dryRun ?? false;
  const started = Date.now();
  // Also for a dry run: without the lock, a backup's freshly sealed packs would look unreferenced.
  const lock = await Repository.lockWriter(repo.layout, dryRun ? 'prune --dry-run' : 'prune');
  try {
    repo.index.refresh();
    const { records, damaged } = await repo.snapshots.load();
    if (damaged.length > 0) {
      throw new SnapfsError('CORRUPT_DATA', `prune refused: ${damaged.length} snapshot record(s) cannot be read (${damaged[0]!.file}: ${damaged[0]!.error}); what they reference is unknown. Run 'snapfs check'`);
    }
    const warnings: string[] = [];
    const live = await markLive(repo, records, warnings, opts.onProgress);
    const plan = await planPacks(repo, live, threshold, maxUnused, warnings);

    const result: PruneResult = {
      dryRun,
      snapshots: records.length,
      blobs: { total: plan.totalBlobs, live: live.size, removed: 0, moved: 0 },
      packs: { before: plan.packs.length + plan.unreferenced.length, deleted: 0, repacked: 0, kept: 0, written: 0, unreferenced: plan.unreferenced.length, after: 0 },
      bytes: { before: plan.bytesBefore, after: 0, freed: 0, copied: 0 },
      durationMs: 0,
      warnings,
    };
    await confirmWithTrailers(repo, plan, live, warnings);
    const toDelete = plan.packs.filter((p) => p.action === 'delete');
    const toRepack = plan.packs.filter((p) => p.action === 'repack');
    result.packs.kept = plan.packs.length - toDelete.length - toRepack.length;

    if (dryRun) {
      result.packs.deleted = toDelete.length;
      result.packs.repacked = toRepack.length;
      result.blobs.removed = [...toDelete, ...toRepack].reduce((n, p) => n + p.deadCount, 0);
      result.blobs.moved = toRepack.reduce((n, p) => n + p.liveCount, 0);
      result.bytes.copied = toRepack.reduce((n, p) => n + p.liveBytes, 0);
      const freed = [...toDelete, ...toRepack].reduce((n, p) => n + p.size, 0) + plan.unreferenced.reduce((n, u) => n + u.size, 0);
      // Estimate: copied blobs land in new packs with their headers and trailer entries.
      result.bytes.after = plan.bytesBefore - freed + result.bytes.copied;
    } else {
      await sweep(repo, toDelete, toRepack, plan.unreferenced, result, opts.onProgress);
      try {
        repo.index.forgetListings((tree) => live.has(idToHex(tree)));
      } catch (err) {
        warnings.push(`the directory listings kept for backups of trees now deleted could not be forgotten: ${(err as Error).message}`);
      }
      result.bytes.after = 0;
      for (const p of repo.index.allPacks()) result.bytes.after += p.size;
    }
    result.bytes.freed = result.bytes.before - result.bytes.after;
    result.packs.after = result.packs.before - result.packs.deleted - result.packs.repacked - result.packs.unreferenced + result.packs.written;
    result.durationMs = Date.now() - started;
    return result;
  } finally {
    await lock.release();
  }
}

/** Ids (hex) of every blob a snapshot reaches. Stops at a tree it cannot read. */
async function markLive(repo: Repository, records: readonly SnapshotRecord[], warnings: string[], onProgress?: (p: PruneProgress) => void): Promise<Set<string>> {
  const live = new Set<string>();
  let trees = 0;
  let missingChunks = 0;
  const visit = async (id: BlobId, where: string): Promise<void> => {
    const key = idToHex(id);
    if (live.has(key)) return; // trees are content-addressed: seen once, seen whole
    live.add(key);
    let node;
    try {
      node = decodeTreeNode(await repo.blobs.get(id, BlobType.Tree));
    } catch (err) {
      throw new SnapfsError(
        'CORRUPT_DATA',
        `prune refused: ${where}: tree ${key} cannot be read (${(err as Error).message}); what it references is unknown, so nothing was deleted. Run 'snapfs check'`,
        { cause: err },
      );
    }
    onProgress?.({ phase: 'mark', done: ++trees, total: 0, unit: 'trees' });
    if (node.kind === 'index') {
      for (const page of node.pages) await visit(page.id, where);
      return;
    }
    for (const e of node.entries) {
      if (e.content) {
        const list = decodeChunkList(e.content, e.size);
        for (let i = 0; i < list.count; i++) {
          const chunk = chunkId(list, i);
          const hex = idToHex(chunk);
          if (live.has(hex)) continue;
          live.add(hex);
          if (!repo.index.has(chunk)) missingChunks++;
        }
      }
      if (e.subtree) await visit(e.subtree, `${where}${e.name.toString('utf8')}/`);
    }
  };
  for (const r of records) await visit(idFromHex(r.root, `snapshot ${r.id} root`), `${r.source}@${r.name}:/`);
  if (missingChunks > 0) warnings.push(`${missingChunks} file chunk(s) referenced by snapshots are not in the index (already lost; run 'snapfs check' to see which files)`);
  return live;
}

interface Plan {
  packs: PackPlan[];
  unreferenced: Array<{ hex: string; size: number }>;
  totalBlobs: number;
  bytesBefore: number;
}

async function planPacks(repo: Repository, live: Set<string>, threshold: number, maxUnused: number, warnings: string[]): Promise<Plan> {
  const onDisk = new Set(await listPackFiles(repo.layout));
  const packs = new Map<string, PackPlan>();
  let bytesBefore = 0;
  for (const p of repo.index.allPacks()) {
    const hex = idToHex(p.id);
    packs.set(hex, { hex, size: p.size, liveBytes: 0, liveCount: 0, deadCount: 0, deadBytes: 0, onDisk: onDisk.has(hex), action: 'keep', live: [], dead: [] });
    bytesBefore += p.size;
  }
  // Pass 1: count live and dead blobs per pack.
  let totalBlobs = 0;
  let strays = 0;
  for (const b of repo.index.allBlobs()) {
    totalBlobs++;
    const p = packs.get(idToHex(b.pack));
    if (!p) {
      strays++;
      continue;
    }
    if (live.has(idToHex(b.id))) {
      p.liveCount++;
      p.liveBytes += BLOB_HEADER_BYTES + b.storedLength;
    } else {
      p.deadCount++;
      p.deadBytes += BLOB_HEADER_BYTES + b.storedLength;
    }
  }
  if (strays > 0) warnings.push(`${strays} index entries name packs the index does not list; left alone (run 'snapfs repair index')`);
  for (const p of packs.values()) {
    if (!p.onDisk) {
      if (p.liveCount > 0) warnings.push(`pack ${p.hex} is missing from disk and holds ${p.liveCount} live blob(s); left in the index (run 'snapfs check')`);
      else p.action = 'delete';
    } else if (p.liveCount === 0) p.action = 'delete';
    else if (p.liveBytes < threshold * p.size) p.action = 'repack';
  }
  // The unused-space budget: dead bytes left in kept packs, sparsest packs repacked first.
  const kept = [...packs.values()].filter((p) => p.action === 'keep' && p.onDisk && p.deadCount > 0);
  const liveTotal = [...packs.values()].reduce((n, p) => n + p.liveBytes, 0);
  let unused = kept.reduce((n, p) => n + p.deadBytes, 0);
  kept.sort((a, b) => a.liveBytes / (a.liveBytes + a.deadBytes) - b.liveBytes / (b.liveBytes + b.deadBytes));
  for (const p of kept) {
    if (unused <= maxUnused * liveTotal) break;
    p.action = 'repack';
    unused -= p.deadBytes;
  }
  // Pass 2: the blob lists of the packs that go.
  for (const b of repo.index.allBlobs()) {
    const p = packs.get(idToHex(b.pack));
    if (!p || p.action === 'keep') continue;
    if (live.has(idToHex(b.id))) p.live.push(b);
    else p.dead.push(b.id);
  }
  // Packs on disk that the index does not know: a writer died between sealing and
  // committing, or a prune between committing and unlinking. Nothing references them.
  const unreferenced: Plan['unreferenced'] = [];
  for (const hex of onDisk) {
    if (packs.has(hex)) continue;
    const size = await fs.stat(repo.layout.packFile(hex)).then((s) => s.size, () => 0);
    unreferenced.push({ hex, size });
    bytesBefore += size;
  }
  return { packs: [...packs.values()].sort((a, b) => a.hex.localeCompare(b.hex)), unreferenced, totalBlobs, bytesBefore };
}

/**
 * The index is a cache of what the pack trailers say, and a damaged one (an LMDB page gone
 * bad) can lose a pack's entries while the pack holds data a snapshot needs: the pack then
 * looks dead, or unknown, and deleting it would destroy what 'repair index' could still
 * recover. So before anything is removed, every pack that would go (deleted, repacked, or
 * unknown to the index) is checked against its own trailer: a blob a snapshot references
 * that the index does not place there stops the prune, with nothing changed. A pack whose
 * trailer cannot be read is kept (check reports it).
 */
async function confirmWithTrailers(repo: Repository, plan: Plan, live: Set<string>, warnings: string[]): Promise<void> {
  const refuse = (hex: string, blob: string): never => {
    throw new SnapfsError(
      'CORRUPT_DATA',
      `prune refused: pack ${hex} holds blob ${blob}, which a snapshot references but the index does not place there: the index is damaged. Nothing was deleted. Run 'snapfs repair index' (it rebuilds the index from the packs), then 'snapfs check'`,
    );
  };
  const trailer = async (hex: string): Promise<{ count: number; entries: Buffer } | undefined> => {
    try {
      return await readPackTrailerEntries(repo.layout.packFile(hex));
    } catch (err) {
      warnings.push(`pack ${hex}: its trailer cannot be read (${(err as Error).message}); kept as it is (run 'snapfs check')`);
      return undefined;
    }
  };
  const byHex = new Map(plan.packs.map((p) => [p.hex, p]));
  // A live blob in a pack that goes is safe only if it is copied (repack) or the index has
  // it in another pack that is on disk (a duplicate written by two backups at once).
  const elsewhere = (id: Buffer, packHex: string): boolean => {
    const loc = repo.index.lookup(id);
    const home = loc && byHex.get(idToHex(loc.pack));
    return home !== undefined && home.onDisk && home.hex !== packHex;
  };
  for (const p of plan.packs) {
    if (p.action === 'keep' || !p.onDisk) continue;
    const t = await trailer(p.hex);
    if (!t) {
      p.action = 'keep';
      continue;
    }
    const copied = new Set(p.live.map((b) => idToHex(b.id)));
    for (let i = 0; i < t.count; i++) {
      const id = trailerEntry(t.entries, i).id;
      const hex = idToHex(id);
      if (live.has(hex) && !copied.has(hex) && !elsewhere(id, p.hex)) refuse(p.hex, hex);
    }
  }
  const unknown: Plan['unreferenced'] = [];
  for (const u of plan.unreferenced) {
    const t = await trailer(u.hex);
    if (!t) continue;
    for (let i = 0; i < t.count; i++) {
      const id = trailerEntry(t.entries, i).id;
      const hex = idToHex(id);
      if (live.has(hex) && !elsewhere(id, u.hex)) refuse(u.hex, hex);
    }
    unknown.push(u);
  }
  plan.unreferenced = unknown;
}

class Batch {
  added: SealedPack[] = [];
  removedPacks: Buffer[] = [];
  removedBlobs: BlobId[] = [];
  files: string[] = [];
  copied = 0;

  get full(): boolean {
    return this.removedPacks.length >= BATCH_PACKS || this.copied >= BATCH_COPY_BYTES || this.removedBlobs.length >= BATCH_REMOVED_BLOBS;
  }
}

async function sweep(
  repo: Repository,
  toDelete: PackPlan[],
  toRepack: PackPlan[],
  unreferenced: Plan['unreferenced'],
  result: PruneResult,
  onProgress?: (p: PruneProgress) => void,
): Promise<void> {
  const writers = new Map<BlobType, PackWriter>();
  let batch = new Batch();
  const totalBytes = toRepack.reduce((n, p) => n + p.size, 0);
  let doneBytes = 0;

  const sealAll = async (): Promise<void> => {
    for (const [type, w] of writers) {
      writers.delete(type);
      if (w.blobCount > 0) batch.added.push(await w.seal());
      else await w.discard();
    }
  };
  const commit = async (): Promise<void> => {
    await sealAll();
    if (batch.removedPacks.length === 0 && batch.added.length === 0) return;
    // New packs are sealed and fsynced; now one transaction moves and drops, then it must
    // be on disk before any old pack file disappears.
    await repo.index.replacePacks(
      batch.added.map((a) => ({ pack: a.id, size: a.size, blobs: a.blobs })),
      batch.removedPacks,
      batch.removedBlobs,
    );
    await repo.index.flushed();
    result.packs.written += batch.added.length;
    result.blobs.removed += batch.removedBlobs.length;
    await unlinkPacks(batch.files);
    batch = new Batch();
  };

  try {
    for (const p of toDelete) {
      batch.removedPacks.push(idFromHex(p.hex));
      batch.removedBlobs.push(...p.dead);
      if (p.onDisk) batch.files.push(repo.layout.packFile(p.hex));
      result.packs.deleted++;
      onProgress?.({ phase: 'delete', done: result.packs.deleted, total: toDelete.length, unit: 'packs' });
      if (batch.full) await commit();
    }
    for (const p of toRepack) {
      const file = repo.layout.packFile(p.hex);
      const copies = await readLiveBlobs(repo, p, file, result.warnings);
      doneBytes += p.size;
      onProgress?.({ phase: 'repack', done: doneBytes, total: totalBytes, unit: 'bytes' });
      if (!copies) continue; // damaged: keep the pack as it is
      for (const c of copies) {
        let w = writers.get(c.type);
        if (!w) writers.set(c.type, (w = new PackWriter(repo.layout)));
        await w.add(c);
        if (w.size >= repo.config.packTargetBytes) {
          writers.delete(c.type);
          batch.added.push(await w.seal());
        }
        batch.copied += c.storedLength + BLOB_HEADER_BYTES;
        result.bytes.copied += c.storedLength + BLOB_HEADER_BYTES;
      }
      result.blobs.moved += copies.length;
      batch.removedPacks.push(idFromHex(p.hex));
      batch.removedBlobs.push(...p.dead);
      batch.files.push(file);
      result.packs.repacked++;
      p.live = [];
      if (batch.full) await commit();
    }
    await commit();
  } finally {
    for (const w of writers.values()) await w.discard();
  }
  // Unreferenced packs need no index change.
  await unlinkPacks(unreferenced.map((u) => repo.layout.packFile(u.hex)));
}

/** The live blobs of a pack, each verified; undefined (with a warning) when one fails. */
async function readLiveBlobs(repo: Repository, p: PackPlan, file: string, warnings: string[]) {
  let data: Buffer;
  try {
    data = await fs.readFile(file);
  } catch (err) {
    warnings.push(`pack ${p.hex}: cannot be read (${(err as Error).message}); kept as it is`);
    return undefined;
  }
  const out = [];
  for (const b of p.live.sort((x, y) => x.offset - y.offset)) {
    const stored = data.subarray(b.offset, b.offset + BLOB_HEADER_BYTES + b.storedLength);
    try {
      decodeStoredBlob(repo.hasher, b.id, b, stored, b.type);
    } catch (err) {
      // Copying would only move the damage; leave the pack for check and a human.
      warnings.push(`pack ${p.hex}: not repacked, a live blob is damaged: ${(err as Error).message}`);
      return undefined;
    }
    out.push({ id: b.id, type: b.type, compression: b.compression, rawLength: b.rawLength, storedLength: b.storedLength, stored: Buffer.from(stored.subarray(BLOB_HEADER_BYTES)) });
  }
  return out;
}

async function unlinkPacks(files: readonly string[]): Promise<void> {
  const dirs = new Set<string>();
  for (const f of files) {
    try {
      await fs.unlink(f);
      dirs.add(path.dirname(f));
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw fromSystemError(err, `removing ${f}`);
    }
  }
  for (const d of dirs) await fsyncDir(d).catch(() => undefined);
}
