// Rebuilds the LMDB index from the packs alone (the packs are the source of truth).
//
// The new index is built beside the old one (index-rebuild/) and swapped in at the end,
// so an interrupted repair leaves whatever was there before; the old index is never
// opened (a damaged LMDB file is not something to read). A pack whose trailer is damaged
// is scanned blob by blob (each blob header has its own checksum, each blob is verified
// against its keyed id); what is intact is copied into a new, properly sealed pack and
// the damaged file is renamed to ID.pack.damaged (kept for inspection, ignored by snapfs).
// Runs under the writer lock. A running mount keeps the old index: remount afterwards.

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BlobHasher, idToHex } from '../format/blob-id.js';
import { BLOB_HEADER_BYTES, BlobType, Compression, MAX_BLOB_BYTES, PACK_HEADER_BYTES, PackedBlob, decodeBlobHeader } from '../format/pack.js';
import { hash32 } from '../format/blob-id.js';
import { Repository } from '../store/repository.js';
import { BlobIndex } from '../store/blob-index.js';
import { decodeStoredBlob } from '../store/blob-store.js';
import { PackWriter, StoredBlob, listPackFiles, readPackTrailer } from '../store/pack-files.js';
import { fsyncDir } from '../store/files.js';
import { SnapfsError, fromSystemError } from '../errors.js';

export interface RepairIndexOptions {
  /**
   * Also read and verify every blob of packs whose trailer is intact, and leave the ones that
   * fail out of the index: the next backup then stores that content again instead of
   * deduplicating against damaged bytes.
   */
  readData?: boolean;
  onProgress?: (p: { done: number; total: number; unit: 'packs' }) => void;
}

export interface CorruptBlobReport {
  pack: string;
  blob: string;
  error: string;
}

export interface DamagedPackReport {
  pack: string;
  /** Why its trailer could not be used. */
  error: string;
  recoveredBlobs: number;
  recoveredBytes: number;
  /** Bytes of the file that belong to no intact blob (the damage, and the broken trailer). */
  unreadableBytes: number;
  /** New pack holding the recovered blobs, when any. */
  salvagedInto: string[];
  /** Where the damaged file was moved. */
  keptAs: string;
}

export interface RepairIndexResult {
  packs: number;
  blobs: number;
  /** Blobs found in more than one pack (the first pack in id order is indexed). */
  duplicates: number;
  damaged: DamagedPackReport[];
  /** With readData: blobs of intact-looking packs that failed verification, left out of the index. */
  corrupt: CorruptBlobReport[];
  durationMs: number;
}

const BATCH_PACKS = 64;

export async function repairIndex(root: string, opts: RepairIndexOptions = {}): Promise<RepairIndexResult> {
  const started = Date.now();
  const { layout, config } = await Repository.loadConfig(root);
  const hasher = new BlobHasher(Buffer.from(config.hashSecret, 'hex'));
  const lock = await Repository.lockWriter(layout, 'repair index');
  // No dot in the name: lmdb-js takes a path with an extension for a file, not a directory.
  const rebuild = `${layout.index}-rebuild`;
  try {
    await fs.rm(rebuild, { recursive: true, force: true });
    await fs.mkdir(rebuild, { mode: 0o700 });
    const index = BlobIndex.open(rebuild, false);
    const result: RepairIndexResult = { packs: 0, blobs: 0, duplicates: 0, damaged: [], corrupt: [], durationMs: 0 };
    const damagedFiles: Array<{ from: string; to: string }> = [];
    try {
      const packs = await listPackFiles(layout);
      let batch: Array<{ pack: Buffer; size: number; blobs: PackedBlob[] }> = [];
      let seen = new Set<string>(); // ids added in the current, uncommitted batch
      const add = (pack: Buffer, size: number, blobs: PackedBlob[]): void => {
        const fresh = blobs.filter((b) => {
          const key = idToHex(b.id);
          if (seen.has(key) || index.has(b.id)) {
            result.duplicates++;
            return false;
          }
          seen.add(key);
          return true;
        });
        batch.push({ pack, size, blobs: fresh });
        result.packs++;
        result.blobs += fresh.length;
      };
      const commit = async (): Promise<void> => {
        if (batch.length > 0) await index.replacePacks(batch, [], []);
        batch = [];
        seen = new Set();
      };

      for (let i = 0; i < packs.length; i++) {
        const hex = packs[i]!;
        const file = layout.packFile(hex);
        try {
          const trailer = await readPackTrailer(file);
          const blobs = opts.readData ? await verifiedBlobs(file, hex, trailer.blobs, hasher, result.corrupt) : trailer.blobs;
          add(Buffer.from(hex, 'hex'), trailer.size, blobs);
        } catch (err) {
          const report = await salvage(layout, hasher, hex, file, (err as Error).message);
          for (const sp of report.sealed) add(sp.id, sp.size, sp.blobs);
          result.damaged.push(report.report);
          damagedFiles.push({ from: file, to: report.report.keptAs });
        }
        if (batch.length >= BATCH_PACKS) await commit();
        opts.onProgress?.({ done: i + 1, total: packs.length, unit: 'packs' });
      }
      await commit();
      await index.flushed();
      if (opts.readData && result.blobs === 0 && result.corrupt.length > 0) {
        // Not one blob verifies: the secret is wrong (another repository's config.json), not
        // every blob damaged. An empty index would make the next backup store everything
        // again under ids that the right config cannot verify.
        throw new SnapfsError(
          'CORRUPT_DATA',
          `none of ${result.corrupt.length} blob(s) matches its id under the hash secret of ${layout.config}: it does not belong to this repository; ` +
            `put back this repository's own config.json (the index was left as it was)`,
        );
      }
    } finally {
      await index.close();
    }
    // Swap: a crash in between leaves no index, and the next repair simply runs again.
    await fs.rm(layout.index, { recursive: true, force: true });
    await fs.rename(rebuild, layout.index);
    await fsyncDir(layout.root);
    for (const d of damagedFiles) {
      await fs.rename(d.from, d.to);
      await fsyncDir(path.dirname(d.to));
    }
    result.durationMs = Date.now() - started;
    return result;
  } catch (err) {
    throw fromSystemError(err, 'repair index');
  } finally {
    await lock.release();
  }
}

/** The blobs of a pack that verify (header, decompression, keyed id); the others are reported. */
async function verifiedBlobs(file: string, hex: string, blobs: PackedBlob[], hasher: BlobHasher, corrupt: CorruptBlobReport[]): Promise<PackedBlob[]> {
  const data = await fs.readFile(file);
  const pack = Buffer.from(hex, 'hex');
  return blobs.filter((b) => {
    try {
      decodeStoredBlob(hasher, b.id, { ...b, pack }, data.subarray(b.offset, b.offset + BLOB_HEADER_BYTES + b.storedLength), b.type);
      return true;
    } catch (err) {
      corrupt.push({ pack: hex, blob: idToHex(b.id), error: (err as Error).message });
      return false;
    }
  });
}

async function salvage(
  layout: Repository['layout'],
  hasher: BlobHasher,
  hex: string,
  file: string,
  error: string,
): Promise<{ report: DamagedPackReport; sealed: Array<{ id: Buffer; size: number; blobs: PackedBlob[] }> }> {
  let data: Buffer;
  try {
    data = await fs.readFile(file);
  } catch (err) {
    // Not a readable file at all (a directory in its place, an unreadable sector): nothing
    // to salvage, but the rest of the repository is still indexed.
    if (!['EISDIR', 'EIO', 'EINVAL', 'EACCES', 'EPERM'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
    data = Buffer.alloc(0);
    error = `${error}; the file cannot be read (${(err as Error).message})`;
  }
  const found = scanBlobs(data, hasher, `pack ${hex}`);
  const report: DamagedPackReport = {
    pack: hex,
    error: error.replace(`pack ${file}: `, ''),
    recoveredBlobs: found.blobs.length,
    recoveredBytes: found.blobs.reduce((n, b) => n + BLOB_HEADER_BYTES + b.storedLength, 0),
    unreadableBytes: 0,
    salvagedInto: [],
    keptAs: `${file}.damaged`,
  };
  report.unreadableBytes = Math.max(0, data.length - PACK_HEADER_BYTES - report.recoveredBytes);
  if (found.blobs.length === 0) return { report, sealed: [] };
  // Tree and data blobs are kept apart in packs, as the writer does.
  const sealed: Array<{ id: Buffer; size: number; blobs: PackedBlob[] }> = [];
  for (const type of [BlobType.Tree, BlobType.Data]) {
    const blobs = found.blobs.filter((b) => b.type === type);
    if (blobs.length === 0) continue;
    const w = new PackWriter(layout);
    try {
      for (const b of blobs) await w.add(b);
      sealed.push(await w.seal());
    } catch (err) {
      await w.discard();
      throw err;
    }
  }
  report.salvagedInto = sealed.map((sp) => idToHex(sp.id));
  return { report, sealed };
}

/**
 * Finds intact blobs in a pack's bytes without its trailer: walks header to header, and
 * after damage slides forward byte by byte until a header checksums and its blob verifies.
 */
export function scanBlobs(data: Buffer, hasher: BlobHasher, what: string): { blobs: StoredBlob[] } {
  const blobs: StoredBlob[] = [];
  const seen = new Set<string>();
  let pos = PACK_HEADER_BYTES;
  while (pos + BLOB_HEADER_BYTES <= data.length) {
    const b = tryBlobAt(data, pos, hasher, what);
    if (!b) {
      pos++;
      continue;
    }
    const key = idToHex(b.id);
    if (!seen.has(key)) {
      seen.add(key);
      blobs.push(b);
    }
    pos += BLOB_HEADER_BYTES + b.storedLength;
  }
  return { blobs };
}

function tryBlobAt(data: Buffer, pos: number, hasher: BlobHasher, what: string): StoredBlob | undefined {
  // Cheap plausibility tests first: most positions after damage fail here.
  const type = data[pos]!;
  const compression = data[pos + 1]!;
  if ((type !== BlobType.Data && type !== BlobType.Tree) || (compression !== Compression.None && compression !== Compression.Zstd)) return undefined;
  if (data[pos + 2] !== 0 || data[pos + 3] !== 0) return undefined;
  const storedLength = data.readUInt32LE(pos + 8);
  if (storedLength > MAX_BLOB_BYTES || pos + BLOB_HEADER_BYTES + storedLength > data.length) return undefined;
  if (data.readUInt32LE(pos + BLOB_HEADER_BYTES - 4) !== hash32(data.subarray(pos, pos + BLOB_HEADER_BYTES - 4))) return undefined;
  try {
    const h = decodeBlobHeader(data.subarray(pos, pos + BLOB_HEADER_BYTES), pos, what);
    const stored = data.subarray(pos, pos + BLOB_HEADER_BYTES + h.storedLength);
    decodeStoredBlob(hasher, h.id, { ...h, pack: Buffer.alloc(16), offset: pos }, stored, h.type);
    return { ...h, stored: Buffer.from(stored.subarray(BLOB_HEADER_BYTES)) };
  } catch {
    return undefined;
  }
}
