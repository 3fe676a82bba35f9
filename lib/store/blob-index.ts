// The LMDB index over the packs: blob id -> (pack, offset, lengths, type), and the set of
// sealed packs. It is a cache of the pack trailers and can always be rebuilt from them
// (repair index). Writers commit one transaction per sealed pack; readers in other
// processes (the mount) see each commit at their next read transaction.

import { open, RootDatabase, Database } from 'lmdb';
import { BLOB_ID_BYTES, BlobId } from '../format/blob-id.js';
import { BlobType, Compression, PackedBlob } from '../format/pack.js';
import { CorruptDataError, SnapfsError, fromSystemError } from '../errors.js';

export interface BlobLocation extends PackedBlob {
  pack: Buffer;
}

export interface PackInfo {
  id: Buffer;
  size: number;
  blobs: number;
}

// Value layout of the blobs table (34 bytes).
const LOCATION_BYTES = 34;

function encodeLocation(pack: Buffer, b: PackedBlob): Buffer {
  const v = Buffer.allocUnsafe(LOCATION_BYTES);
  pack.copy(v, 0);
  v[16] = b.type;
  v[17] = b.compression;
  v.writeUInt32LE(b.offset, 18);
  v.writeUInt32LE(b.storedLength, 22);
  v.writeUInt32LE(b.rawLength, 26);
  v.writeUInt32LE(0, 30);
  return v;
}

function decodeLocation(id: BlobId, v: Buffer): BlobLocation {
  if (v.length !== LOCATION_BYTES) throw new CorruptDataError('index: malformed blob location');
  return {
    id,
    pack: Buffer.from(v.subarray(0, 16)),
    type: v[16] as BlobType,
    compression: v[17] as Compression,
    offset: v.readUInt32LE(18),
    storedLength: v.readUInt32LE(22),
    rawLength: v.readUInt32LE(26),
  };
}

export class BlobIndex {
  private constructor(
    private readonly env: RootDatabase,
    private readonly blobs: Database<Buffer, Buffer>,
    private readonly packs: Database<Buffer, Buffer>,
  ) {}

  static open(dir: string, readOnly: boolean): BlobIndex {
    let env: RootDatabase;
    try {
      env = open({ path: dir, maxDbs: 4, readOnly, noMemInit: true, compression: false });
    } catch (err) {
      throw new SnapfsError('CORRUPT_DATA', `index ${dir}: cannot open (${(err as Error).message}); run 'snapfs repair index'`, { cause: err });
    }
    const opts = { keyEncoding: 'binary' as const, encoding: 'binary' as const, compression: false };
    const blobs = env.openDB<Buffer, Buffer>({ name: 'blobs', ...opts });
    const packs = env.openDB<Buffer, Buffer>({ name: 'packs', ...opts });
    return new BlobIndex(env, blobs, packs);
  }

  lookup(id: BlobId): BlobLocation | undefined {
    const v = this.blobs.getBinary(id);
    return v ? decodeLocation(id, v) : undefined;
  }

  /** Moves the read view to the latest commit (another process may have written). */
  refresh(): void {
    this.env.resetReadTxn();
  }

  has(id: BlobId): boolean {
    return this.blobs.doesExist(id);
  }

  /** Records a sealed pack and all its blobs in one transaction. */
  async addPack(pack: Buffer, size: number, blobs: readonly PackedBlob[]): Promise<void> {
    await this.write('recording a pack in the index', () => {
      for (const b of blobs) this.blobs.put(b.id, encodeLocation(pack, b));
      this.packs.put(pack, packInfoValue(size, blobs.length));
    });
  }

  /** One write transaction; LMDB failures (disk full above all) become SnapfsErrors. */
  private async write(what: string, fn: () => void): Promise<void> {
    try {
      await this.env.transaction(fn);
    } catch (err) {
      // lmdb-js rejects with a generic "Commit failed" and keeps the cause aside.
      const cause = (err as { commitError?: Promise<unknown> }).commitError;
      const inner = cause ? await cause.then(() => err, (e: unknown) => e) : err;
      throw fromSystemError(inner, `index ${what}`);
    }
  }

  /** Replaces packs: new locations for moved blobs, then removal of the old packs' entries. */
  async replacePacks(added: Array<{ pack: Buffer; size: number; blobs: readonly PackedBlob[] }>, removedPacks: Buffer[], removedBlobs: BlobId[]): Promise<void> {
    await this.write('replacing packs', () => {
      for (const id of removedBlobs) this.blobs.remove(id);
      for (const a of added) {
        for (const b of a.blobs) this.blobs.put(b.id, encodeLocation(a.pack, b));
        this.packs.put(a.pack, packInfoValue(a.size, a.blobs.length));
      }
      for (const p of removedPacks) this.packs.remove(p);
    });
  }

  *allBlobs(): Generator<BlobLocation> {
    for (const { key, value } of this.blobs.getRange({})) yield decodeLocation(Buffer.from(key), value);
  }

  *allPacks(): Generator<PackInfo> {
    for (const { key, value } of this.packs.getRange({})) {
      yield { id: Buffer.from(key), size: value.readUInt32LE(0) + value.readUInt32LE(4) * 2 ** 32, blobs: value.readUInt32LE(8) };
    }
  }

  packCount(): number {
    return this.packs.getCount();
  }

  blobCount(): number {
    return this.blobs.getCount();
  }

  /** Waits until every commit so far is on stable storage. */
  async flushed(): Promise<void> {
    try {
      await this.env.flushed;
    } catch (err) {
      throw fromSystemError(err, 'index flush');
    }
  }

  async clear(): Promise<void> {
    await this.write('clearing', () => {
      this.blobs.clearSync();
      this.packs.clearSync();
    });
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}

function packInfoValue(size: number, blobs: number): Buffer {
  const v = Buffer.alloc(12);
  v.writeUInt32LE(size % 2 ** 32, 0);
  v.writeUInt32LE(Math.floor(size / 2 ** 32), 4);
  v.writeUInt32LE(blobs, 8);
  return v;
}

export { BLOB_ID_BYTES };
