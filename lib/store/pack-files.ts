// Pack files on disk: writing a new pack (temp file, fsync, rename into place) and
// reading byte ranges of sealed packs through a small cache of open descriptors.

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { RepoLayout } from './layout.js';
import { fsyncDir, writeFully } from './files.js';
import { idToHex } from '../format/blob-id.js';
import { dropCachedPages, preadCached } from '../platform/native.js';
import { BufferPool } from '../util/buffer-pool.js';
import {
  BLOB_HEADER_BYTES,
  MAX_PACK_BYTES,
  PackedBlob,
  encodeBlobHeader,
  encodePackHeader,
  encodeTrailer,
  decodeFooter,
  decodePackHeader,
  checkTrailer,
  trailerEntry,
  PACK_FOOTER_BYTES,
  PACK_HEADER_BYTES,
} from '../format/pack.js';
import { CorruptDataError, errnoCode, fromSystemError } from '../errors.js';

export interface StoredBlob extends Omit<PackedBlob, 'offset'> {
  stored: Buffer;
}

export interface SealedPack {
  id: Buffer;
  size: number;
  blobs: PackedBlob[];
}

const WRITE_BUFFER_BYTES = 4 * 1024 * 1024;
/**
 * Write buffers of sealed packs, for the next packs: a fresh 4 MiB buffer per pack is
 * mapped anew and faulted in page by page (glibc maps buffers this big on their own).
 */
const spareWriteBuffers = new BufferPool(2 * WRITE_BUFFER_BYTES);

/** Appends blobs to a new pack; `seal` makes it durable and visible under its final name. */
export class PackWriter {
  readonly id = randomBytes(16);
  private readonly blobs: PackedBlob[] = [];
  private readonly tmpPath: string;
  private fh: fs.FileHandle | undefined;
  /**
   * Blobs are copied into this buffer, written out when full: the caller's buffers (often
   * views of much larger read blocks) are not kept once `add` returns. Given back (and
   * undefined) once the pack is sealed or discarded.
   */
  private buffer: Buffer | undefined = spareWriteBuffers.take(WRITE_BUFFER_BYTES);
  private bufferedBytes = 0;
  private written = 0;
  private offset = PACK_HEADER_BYTES;

  constructor(private readonly layout: RepoLayout) {
    this.tmpPath = path.join(layout.incoming, `${idToHex(this.id)}.tmp`);
    this.bufferedBytes = encodePackHeader().copy(this.buffer!, 0);
  }

  /** Bytes the pack holds so far. */
  get size(): number {
    return this.offset;
  }

  get blobCount(): number {
    return this.blobs.length;
  }

  async add(blob: StoredBlob): Promise<void> {
    if (this.offset + BLOB_HEADER_BYTES + blob.stored.length > MAX_PACK_BYTES) throw new RangeError('pack full');
    // A view of a buffer already given back (see CompressedFrame) is empty: refuse, never
    // write a header that promises bytes which are not there.
    if (blob.stored.length !== blob.storedLength) throw new Error(`pack add: ${blob.stored.length} bytes for a blob of ${blob.storedLength}`);
    const header = encodeBlobHeader(blob);
    this.blobs.push({ id: blob.id, type: blob.type, compression: blob.compression, offset: this.offset, storedLength: blob.storedLength, rawLength: blob.rawLength });
    await this.append(header);
    await this.append(blob.stored);
    this.offset += header.length + blob.stored.length;
  }

  private async append(data: Buffer): Promise<void> {
    const buffer = this.writeBuffer();
    if (this.bufferedBytes + data.length > buffer.length) await this.drain();
    if (data.length >= buffer.length) await this.writeOut(data);
    else this.bufferedBytes += data.copy(buffer, this.bufferedBytes);
  }

  private async drain(): Promise<void> {
    if (this.bufferedBytes === 0) return;
    await this.writeOut(this.writeBuffer().subarray(0, this.bufferedBytes));
    this.bufferedBytes = 0;
  }

  private writeBuffer(): Buffer {
    if (!this.buffer) throw new Error(`pack ${this.tmpPath}: written to after seal or discard`);
    return this.buffer;
  }

  private releaseBuffer(): void {
    if (this.buffer) spareWriteBuffers.give(this.buffer);
    this.buffer = undefined;
  }

  private async writeOut(data: Buffer): Promise<void> {
    try {
      if (!this.fh) {
        await fs.mkdir(this.layout.incoming, { recursive: true, mode: 0o700 });
        this.fh = await fs.open(this.tmpPath, 'wx', 0o600);
      }
      // A short write would otherwise be sealed and indexed as a truncated pack.
      await writeFully(this.fh, data, this.written);
      this.written += data.length;
    } catch (err) {
      throw fromSystemError(err, `writing pack ${this.tmpPath}`);
    }
  }

  /** Trailer, fsync, rename to packs/xx/ID.pack, fsync the directory. */
  async seal(): Promise<SealedPack> {
    const trailer = encodeTrailer(this.blobs);
    const size = this.offset + trailer.length;
    await this.append(trailer);
    await this.drain();
    this.releaseBuffer();
    const hex = idToHex(this.id);
    const finalPath = this.layout.packFile(hex);
    try {
      await this.fh!.sync();
      // Synced, its pages are clean: let them go. Nothing reads a new pack back soon (the
      // index says what it holds), a backup should not push the server's own files out of
      // the page cache, and the next pack is then written into these pages instead of
      // fresh ones (on a VM whose host backs memory lazily, 1 GiB written into fresh pages
      // took 1.6 s of system time, into recycled ones 0.15 s).
      dropCachedPages(this.fh!.fd);
      await this.fh!.close();
      this.fh = undefined;
      await fs.mkdir(path.dirname(finalPath), { recursive: true, mode: 0o700 });
      await fs.rename(this.tmpPath, finalPath);
      await fsyncDir(path.dirname(finalPath));
    } catch (err) {
      throw fromSystemError(err, `sealing pack ${finalPath}`);
    }
    return { id: this.id, size, blobs: this.blobs };
  }

  /** Drops an unsealed pack (after a failure). */
  async discard(): Promise<void> {
    this.releaseBuffer();
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
    await fs.rm(this.tmpPath, { force: true }).catch(() => undefined);
  }
}

/** Reads sealed packs; keeps a bounded number of descriptors open. */
export class PackReader {
  private readonly open = new Map<string, Promise<fs.FileHandle>>();

  constructor(private readonly layout: RepoLayout, private readonly maxOpen = 64) {}

  private handle(hex: string): Promise<fs.FileHandle> {
    let h = this.open.get(hex);
    if (h) {
      // Refresh LRU position.
      this.open.delete(hex);
      this.open.set(hex, h);
      return h;
    }
    h = fs.open(this.layout.packFile(hex), 'r');
    h.catch(() => this.open.delete(hex));
    this.open.set(hex, h);
    if (this.open.size > this.maxOpen) {
      const [oldest, fh] = this.open.entries().next().value as [string, Promise<fs.FileHandle>];
      this.open.delete(oldest);
      // Close later: a read may still be using it.
      fh.then((f) => setTimeout(() => f.close().catch(() => undefined), 5000).unref()).catch(() => undefined);
    }
    return h;
  }

  /**
   * Reads exactly `length` bytes at `offset` (into `into`, `length` bytes long, when given),
   * or fails with CORRUPT_DATA on a short pack.
   */
  async read(pack: Buffer, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const hex = idToHex(pack);
    const fh = await this.handle(hex);
    const buf = into ?? Buffer.allocUnsafe(length);
    // Mostly the bytes are cached already (the kernel reads packs ahead): then a
    // synchronous copy costs microseconds, an fs.read a thread-pool round trip.
    if (preadCached(fh.fd, buf.subarray(0, length), offset) === length) return buf;
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    if (bytesRead !== length) throw new CorruptDataError(`pack ${hex}: truncated (wanted ${length} bytes at ${offset}, got ${bytesRead})`);
    return buf;
  }

  /**
   * The open descriptor of a pack, for native code that reads it on threads of its own
   * (the mount's read-ahead): valid for the current turn only, since a descriptor evicted
   * from the cache is closed a few seconds later; such code duplicates it at once.
   */
  async descriptor(pack: Buffer): Promise<number> {
    return (await this.handle(idToHex(pack))).fd;
  }

  /** Forgets a cached descriptor (after the pack was replaced or removed). */
  forget(pack: Buffer): void {
    const hex = idToHex(pack);
    const h = this.open.get(hex);
    this.open.delete(hex);
    h?.then((f) => f.close()).catch(() => undefined);
  }

  async close(): Promise<void> {
    const all = [...this.open.values()];
    this.open.clear();
    await Promise.all(all.map((h) => h.then((f) => f.close()).catch(() => undefined)));
  }
}

/** Reads and checks a pack's trailer: the list of blobs it holds. */
export async function readPackTrailer(file: string): Promise<{ size: number; blobs: PackedBlob[] }> {
  const { size, count, entries } = await readPackTrailerEntries(file);
  const blobs: PackedBlob[] = [];
  for (let i = 0; i < count; i++) {
    const b = trailerEntry(entries, i);
    b.id = Buffer.from(b.id);
    blobs.push(b);
  }
  return { size, blobs };
}

/**
 * Reads and checks a pack's trailer, kept encoded (32 bytes a blob; read entries with
 * trailerEntry): what check uses, where an object per blob made it O(blobs) in memory.
 */
export async function readPackTrailerEntries(file: string): Promise<{ size: number; count: number; entries: Buffer }> {
  const what = `pack ${file}`;
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (err) {
    throw fromSystemError(err, what);
  }
  try {
    const { size } = await fh.stat();
    if (size < PACK_HEADER_BYTES + PACK_FOOTER_BYTES) throw new CorruptDataError(`${what}: too short (${size} bytes)`);
    const header = Buffer.alloc(PACK_HEADER_BYTES);
    await fh.read(header, 0, PACK_HEADER_BYTES, 0);
    decodePackHeader(header, what);
    const footerBuf = Buffer.alloc(PACK_FOOTER_BYTES);
    await fh.read(footerBuf, 0, PACK_FOOTER_BYTES, size - PACK_FOOTER_BYTES);
    const footer = decodeFooter(footerBuf, size, what);
    const entries = Buffer.alloc(footer.trailerBytes);
    await fh.read(entries, 0, footer.trailerBytes, size - PACK_FOOTER_BYTES - footer.trailerBytes);
    checkTrailer(entries, footer, size, what);
    return { size, count: footer.count, entries };
  } finally {
    await fh.close();
  }
}

/** Every sealed pack file in the repository, as hex ids. */
export async function listPackFiles(layout: RepoLayout): Promise<string[]> {
  const out: string[] = [];
  let dirs: string[];
  try {
    dirs = await fs.readdir(layout.packs);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return out;
    throw err;
  }
  for (const d of dirs.sort()) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const f of (await fs.readdir(path.join(layout.packs, d))).sort()) {
      const m = /^([0-9a-f]{32})\.pack$/.exec(f);
      if (m && m[1]!.startsWith(d)) out.push(m[1]!);
    }
  }
  return out;
}
