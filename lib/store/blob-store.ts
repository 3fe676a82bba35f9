// Content-addressed blobs over packs and the index. Reading verifies every blob against
// its id, so damage anywhere below gives CORRUPT_DATA and never wrong bytes. Writing
// deduplicates, compresses on the worker pool, fills packs and commits each sealed pack
// to the index in one transaction: a blob is referenced only after its pack is durable.

import { BlobHasher, BlobId, idToHex } from '../format/blob-id.js';
import { BLOB_HEADER_BYTES, BlobType, Compression, decodeBlobHeader } from '../format/pack.js';
import { BlobIndex, BlobLocation } from './blob-index.js';
import { PackReader, PackWriter } from './pack-files.js';
import { CompressedFrame, CompressionPool, decompressExact, decompressExactAsync } from './compression.js';
import { RepoLayout } from './layout.js';
import { BufferPool } from '../util/buffer-pool.js';
import { CorruptDataError, SnapfsError, errnoCode, fromSystemError } from '../errors.js';

/** Where a blob's stored bytes are, for native code that reads and verifies it itself. */
export interface StoredBlob {
  id: BlobId;
  /** An open descriptor of its pack, valid for the current turn (PackReader.descriptor). */
  fd: number;
  compressed: boolean;
  /** Offset of the stored bytes in the pack (after the blob header). */
  packOffset: number;
  storedLength: number;
  rawLength: number;
}

export class BlobReader {
  constructor(
    readonly index: BlobIndex,
    private readonly packs: PackReader,
    private readonly hasher: BlobHasher,
  ) {}

  has(id: BlobId): boolean {
    return this.index.has(id);
  }

  /**
   * The verified raw bytes of a blob. With `pool`, the pack is read into a pooled buffer
   * (given back before returning) and the bytes are returned in one taken from the pool,
   * which the caller gives back when done with them.
   */
  async get(id: BlobId, type?: BlobType, pool?: BufferPool): Promise<Buffer> {
    let loc = this.locate(id);
    let stored = pool?.take(BLOB_HEADER_BYTES + loc.storedLength);
    try {
      try {
        stored = await this.packs.read(loc.pack, loc.offset, BLOB_HEADER_BYTES + loc.storedLength, stored);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw packError(err, loc.pack);
        // A concurrent prune may have moved the blob to a new pack: look again once.
        this.packs.forget(loc.pack);
        this.index.refresh();
        const moved = this.locate(id);
        if (stored && moved.storedLength !== loc.storedLength) {
          pool!.give(stored);
          stored = pool!.take(BLOB_HEADER_BYTES + moved.storedLength);
        }
        loc = moved;
        try {
          stored = await this.packs.read(loc.pack, loc.offset, BLOB_HEADER_BYTES + loc.storedLength, stored);
        } catch (err2) {
          if (errnoCode(err2) === 'ENOENT') throw new CorruptDataError(`blob ${idToHex(id)}: pack ${idToHex(loc.pack)} is missing`);
          throw packError(err2, loc.pack);
        }
      }
      if (!pool) return await decodeStoredBlobAsync(this.hasher, id, loc, stored, type);
      const raw = pool.take(loc.rawLength);
      try {
        return await decodeStoredBlobAsync(this.hasher, id, loc, stored, type, raw);
      } catch (err) {
        pool.give(raw);
        throw err;
      }
    } finally {
      if (pool && stored) pool.give(stored);
    }
  }

  /**
   * Where a blob's stored bytes are. The header is not read: what reads them must check the
   * raw bytes against the id, which catches a wrong location as well as damage.
   */
  async stored(id: BlobId): Promise<StoredBlob> {
    const loc = this.locate(id);
    let fd: number;
    try {
      fd = await this.packs.descriptor(loc.pack);
    } catch (err) {
      throw packError(err, loc.pack);
    }
    return {
      id,
      fd,
      compressed: loc.compression === Compression.Zstd,
      packOffset: loc.offset + BLOB_HEADER_BYTES,
      storedLength: loc.storedLength,
      rawLength: loc.rawLength,
    };
  }

  /**
   * Several blobs at once, each as `get` gives it, for reads known to come (a directory's
   * subtrees): blobs close together in one pack are read with one `read`. A range that
   * fails is read again blob by blob with `get`, which reports each failure as usual.
   */
  getMany(ids: readonly BlobId[], type?: BlobType): Array<Promise<Buffer>> {
    const out = new Array<Promise<Buffer>>(ids.length);
    const wanted: Array<{ i: number; loc: BlobLocation }> = [];
    for (let i = 0; i < ids.length; i++) {
      const loc = this.index.lookup(ids[i]!);
      if (loc) wanted.push({ i, loc });
      else out[i] = this.get(ids[i]!, type); // reports it missing
    }
    wanted.sort((a, b) => Buffer.compare(a.loc.pack, b.loc.pack) || a.loc.offset - b.loc.offset);
    for (let k = 0; k < wanted.length; ) {
      const first = wanted[k]!.loc;
      let end = first.offset + BLOB_HEADER_BYTES + first.storedLength;
      let n = 1;
      for (; k + n < wanted.length; n++) {
        const next = wanted[k + n]!.loc;
        const nextEnd = next.offset + BLOB_HEADER_BYTES + next.storedLength;
        if (!next.pack.equals(first.pack) || next.offset < end || next.offset - end > RANGE_GAP_BYTES || nextEnd - first.offset > RANGE_MAX_BYTES) break;
        end = nextEnd;
      }
      const run = wanted.slice(k, k + n);
      const range = this.packs.read(first.pack, first.offset, end - first.offset);
      range.catch(() => undefined); // each blob then falls back to `get`
      for (const { i, loc } of run) {
        const at = loc.offset - first.offset;
        out[i] = range.then(
          (buf) => {
            const raw = decodeStoredBlob(this.hasher, loc.id, loc, buf.subarray(at, at + BLOB_HEADER_BYTES + loc.storedLength), type);
            // A blob stored uncompressed is a view of the range: copied, not to keep it all.
            return raw.buffer === buf.buffer ? Buffer.from(raw) : raw;
          },
          () => this.get(loc.id, type),
        );
      }
      k += n;
    }
    return out;
  }

  private locate(id: BlobId): BlobLocation {
    const loc = this.index.lookup(id);
    if (!loc) throw new SnapfsError('BLOB_NOT_FOUND', `blob ${idToHex(id)} is not in the index (damaged repository?)`);
    return loc;
  }
}

/** getMany reads two blobs of a pack with one `read` when at most this far apart... */
const RANGE_GAP_BYTES = 64 * 1024;
/** ...and reads at most this much at once. */
const RANGE_MAX_BYTES = 4 * 1024 * 1024;

/** A failed pack read as a SnapfsError (EIO, EACCES, EISDIR...: never an internal error). */
function packError(err: unknown, pack: Buffer): SnapfsError {
  if (err instanceof SnapfsError) return err;
  const code = errnoCode(err);
  // A pack that is a directory or otherwise not a readable file is damage, not an I/O hiccup.
  if (code === 'EISDIR' || code === 'EINVAL') return new CorruptDataError(`pack ${idToHex(pack)} is not a regular file (${(err as Error).message})`, { cause: err });
  return fromSystemError(err, `reading pack ${idToHex(pack)}`);
}

/**
 * Verifies one stored blob (its 32-byte header followed by the stored bytes, as read from
 * `loc`) and returns its raw bytes: header checksum and fields, decompression, keyed id.
 * Shared by reads, check --read-data and prune's repacking.
 */
export function decodeStoredBlob(hasher: BlobHasher, id: BlobId, loc: Omit<BlobLocation, 'id'>, stored: Buffer, type?: BlobType, into?: Buffer): Buffer {
  const { compressed, body, rawLength, what } = storedBody(id, loc, stored, type);
  const raw = compressed ? decompressExact(body, rawLength, what, into) : rawBody(body, into);
  return verified(hasher, id, raw, what);
}

/** Blobs this big decompress on the thread pool (decodeStoredBlobAsync); smaller ones cost less than the hop. */
const THREAD_POOL_BYTES = 128 * 1024;

/** decodeStoredBlob, with a big blob decompressed on the thread pool: several at once, beside the caller's thread. */
export async function decodeStoredBlobAsync(hasher: BlobHasher, id: BlobId, loc: Omit<BlobLocation, 'id'>, stored: Buffer, type?: BlobType, into?: Buffer): Promise<Buffer> {
  const { compressed, body, rawLength, what } = storedBody(id, loc, stored, type);
  if (!compressed) return verified(hasher, id, rawBody(body, into), what);
  const raw = rawLength >= THREAD_POOL_BYTES ? await decompressExactAsync(body, rawLength, what, into) : decompressExact(body, rawLength, what, into);
  return verified(hasher, id, raw, what);
}

/** The checked header's facts and the stored bytes after it. */
function storedBody(id: BlobId, loc: Omit<BlobLocation, 'id'>, stored: Buffer, type?: BlobType): { compressed: boolean; body: Buffer; rawLength: number; what: string } {
  const what = `blob ${idToHex(id)} in pack ${idToHex(loc.pack)}`;
  const header = decodeBlobHeader(stored.subarray(0, BLOB_HEADER_BYTES), loc.offset, what);
  if (!header.id.equals(id) || header.storedLength !== loc.storedLength || header.rawLength !== loc.rawLength) {
    throw new CorruptDataError(`${what}: header does not match the index`);
  }
  if (type !== undefined && header.type !== type) throw new CorruptDataError(`${what}: expected type ${type}, found ${header.type}`);
  const body = stored.subarray(BLOB_HEADER_BYTES);
  if (body.length !== header.storedLength) throw new CorruptDataError(`${what}: truncated`);
  return { compressed: header.compression === Compression.Zstd, body, rawLength: header.rawLength, what };
}

function rawBody(body: Buffer, into?: Buffer): Buffer {
  return into ? into.subarray(0, body.copy(into)) : body;
}

function verified(hasher: BlobHasher, id: BlobId, raw: Buffer, what: string): Buffer {
  if (!hasher.matches(id, raw)) throw new CorruptDataError(`${what}: content does not match its id`);
  return raw;
}

export interface WriteStats {
  blobsAdded: number;
  /** File-content chunks among blobsAdded (the rest are tree pages). */
  dataBlobsAdded: number;
  bytesAddedRaw: number;
  bytesAddedStored: number;
}

export class BlobWriter {
  readonly stats: WriteStats = { blobsAdded: 0, dataBlobsAdded: 0, bytesAddedRaw: 0, bytesAddedStored: 0 };
  /** Ids being compressed or sitting in unsealed packs: present for dedup purposes. */
  private readonly pending = new Set<string>();
  private readonly current = new Map<BlobType, PackWriter>();
  private readonly sealing: Array<Promise<void>> = [];
  private readonly appendChains = new Map<BlobType, Promise<void>>();
  private failure: unknown;

  constructor(
    private readonly layout: RepoLayout,
    private readonly index: BlobIndex,
    private readonly hasher: BlobHasher,
    private readonly pool: CompressionPool,
    private readonly packTargetBytes: number,
  ) {}

  id(raw: Uint8Array): BlobId {
    return this.hasher.id(raw);
  }

  has(id: BlobId): boolean {
    return this.index.has(id) || this.pending.has(idToHex(id));
  }

  /**
   * Stores a blob unless one with the same id exists. Resolves once it is in a pack
   * (durable only after `flush`), and `raw` is no longer referenced. Returns whether it
   * was new. Callers bound the memory of what they put (see ByteBudget).
   */
  async put(type: BlobType, raw: Buffer, knownId?: BlobId): Promise<{ id: BlobId; added: boolean }> {
    this.throwIfFailed();
    const id = knownId ?? this.hasher.id(raw);
    const key = idToHex(id);
    if (this.pending.has(key) || this.index.has(id)) return { id, added: false };
    this.pending.add(key);
    let frame: CompressedFrame | undefined;
    try {
      frame = raw.length > 0 ? await this.pool.compress(raw) : undefined;
      const useZstd = frame !== undefined && frame.bytes.length < raw.length;
      const stored = useZstd ? frame!.bytes : raw;
      const storedLength = stored.length;
      // The pack copies the bytes before this resolves: the frame can go back to the pool.
      await this.append(type, {
        id,
        type,
        compression: useZstd ? Compression.Zstd : Compression.None,
        rawLength: raw.length,
        storedLength,
        stored,
      });
      this.stats.blobsAdded++;
      if (type === BlobType.Data) this.stats.dataBlobsAdded++;
      this.stats.bytesAddedRaw += raw.length;
      this.stats.bytesAddedStored += storedLength + BLOB_HEADER_BYTES;
      return { id, added: true };
    } catch (err) {
      this.failure ??= err;
      throw err;
    } finally {
      frame?.release();
    }
  }

  private append(type: BlobType, blob: Parameters<PackWriter['add']>[0]): Promise<void> {
    // Appends to one pack are serialized; a full pack is sealed in the background.
    const prev = this.appendChains.get(type) ?? Promise.resolve();
    const next = prev.then(async () => {
      let pack = this.current.get(type);
      if (!pack) {
        pack = new PackWriter(this.layout);
        this.current.set(type, pack);
      }
      await pack.add(blob);
      if (pack.size >= this.packTargetBytes) {
        this.current.delete(type);
        this.sealing.push(this.background(this.sealAndCommit(pack)));
      }
    });
    this.appendChains.set(type, next.catch(() => undefined));
    return next;
  }

  /** A pack sealing in the background: its failure is kept for the next put/flush. */
  private background(p: Promise<void>): Promise<void> {
    p.catch((err: unknown) => {
      this.failure ??= err;
    });
    return p;
  }

  private async sealAndCommit(pack: PackWriter): Promise<void> {
    try {
      const sealed = await pack.seal();
      await this.index.addPack(sealed.id, sealed.size, sealed.blobs);
      for (const b of sealed.blobs) this.pending.delete(idToHex(b.id));
    } catch (err) {
      this.failure ??= err;
      await pack.discard();
      throw err;
    }
  }

  /** Seals every open pack, commits the index and waits until it is on disk. */
  async flush(): Promise<void> {
    for (const chain of this.appendChains.values()) await chain;
    this.throwIfFailed();
    for (const [type, pack] of this.current) {
      this.current.delete(type);
      if (pack.blobCount > 0) this.sealing.push(this.background(this.sealAndCommit(pack)));
    }
    const results = await Promise.allSettled(this.sealing.splice(0));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    this.throwIfFailed();
    await this.index.flushed();
  }

  /** Drops unsealed packs after a failure; sealed ones stay for the next run to reuse. */
  async abort(): Promise<void> {
    for (const chain of this.appendChains.values()) await chain.catch(() => undefined);
    await Promise.allSettled(this.sealing.splice(0));
    for (const pack of this.current.values()) await pack.discard();
    this.current.clear();
  }

  /** Throws the first failure of a put or a pack seal, so that readers stop early. */
  throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}
