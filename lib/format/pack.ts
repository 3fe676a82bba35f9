// Pack file format (version 1). A pack is immutable once sealed:
//
//   header   "SNAPFSPK" | u32 format version | u32 reserved            (16 bytes)
//   blobs    blob header (32 bytes) | stored bytes (zstd frame or raw)  (repeated)
//   trailer  trailer entries (32 bytes each)
//   footer   u32 entry count | u32 trailer bytes | u64 checksum of the trailer | "SNAPFSTR"
//
// The trailer lets the index be rebuilt from packs alone; each blob header repeats the
// blob's type, lengths and id (with its own checksum) so a pack with a lost trailer can
// still be scanned record by record.

import { BinaryReader, BinaryWriter } from './binary.js';
import { BLOB_ID_BYTES, BlobId, checksum64, hash32 } from './blob-id.js';
import { CorruptDataError } from '../errors.js';

export const PACK_FORMAT_VERSION = 1;
const PACK_MAGIC = Buffer.from('SNAPFSPK', 'latin1');
const TRAILER_MAGIC = Buffer.from('SNAPFSTR', 'latin1');
export const PACK_HEADER_BYTES = 16;
export const BLOB_HEADER_BYTES = 32;
export const TRAILER_ENTRY_BYTES = 32;
export const PACK_FOOTER_BYTES = 24;
/** Upper bound for one stored blob: chunks are at most a few MiB, tree pages smaller. */
export const MAX_BLOB_BYTES = 64 * 1024 * 1024;
/** Offsets are u32: a pack must stay below 4 GiB. */
export const MAX_PACK_BYTES = 0xffff_0000;

export enum BlobType {
  Data = 1,
  Tree = 2,
}

export enum Compression {
  None = 0,
  Zstd = 1,
}

/** Where a blob lives inside its pack; `offset` is that of its 32-byte header. */
export interface PackedBlob {
  id: BlobId;
  type: BlobType;
  compression: Compression;
  offset: number;
  storedLength: number;
  rawLength: number;
}

export function encodePackHeader(): Buffer {
  return new BinaryWriter(PACK_HEADER_BYTES).bytes(PACK_MAGIC).u32(PACK_FORMAT_VERSION).u32(0).finish();
}

export function decodePackHeader(buf: Buffer, what: string): void {
  if (buf.length < PACK_HEADER_BYTES || !buf.subarray(0, 8).equals(PACK_MAGIC)) {
    throw new CorruptDataError(`${what}: not a snapfs pack (bad magic)`);
  }
  const version = buf.readUInt32LE(8);
  if (version !== PACK_FORMAT_VERSION) {
    throw new CorruptDataError(`${what}: unsupported pack format version ${version}`);
  }
}

function checkBlobFields(b: Omit<PackedBlob, 'offset'>, what: string): void {
  if (b.type !== BlobType.Data && b.type !== BlobType.Tree) throw new CorruptDataError(`${what}: unknown blob type ${b.type}`);
  if (b.compression !== Compression.None && b.compression !== Compression.Zstd) {
    throw new CorruptDataError(`${what}: unknown compression ${b.compression}`);
  }
  if (b.storedLength > MAX_BLOB_BYTES || b.rawLength > MAX_BLOB_BYTES) throw new CorruptDataError(`${what}: blob too large`);
  if (b.compression === Compression.None && b.storedLength !== b.rawLength) {
    throw new CorruptDataError(`${what}: uncompressed blob with differing lengths`);
  }
}

export function encodeBlobHeader(b: Omit<PackedBlob, 'offset'>): Buffer {
  const w = new BinaryWriter(BLOB_HEADER_BYTES);
  w.u8(b.type).u8(b.compression).u16(0).u32(b.rawLength).u32(b.storedLength).bytes(b.id);
  const body = w.finish();
  return Buffer.concat([body, u32le(hash32(body))]);
}

export function decodeBlobHeader(buf: Buffer, offset: number, what: string): Omit<PackedBlob, 'offset'> {
  if (buf.length < BLOB_HEADER_BYTES) throw new CorruptDataError(`${what}: truncated blob header at ${offset}`);
  const r = new BinaryReader(buf, 0, BLOB_HEADER_BYTES, what);
  const type = r.u8();
  const compression = r.u8();
  r.u16();
  const rawLength = r.u32();
  const storedLength = r.u32();
  const id = Buffer.from(r.bytes(BLOB_ID_BYTES));
  const sum = r.u32();
  if (sum !== hash32(buf.subarray(0, BLOB_HEADER_BYTES - 4))) {
    throw new CorruptDataError(`${what}: blob header checksum mismatch at offset ${offset}`);
  }
  const blob = { id, type, compression, rawLength, storedLength };
  checkBlobFields(blob, what);
  return blob;
}

export function encodeTrailer(blobs: readonly PackedBlob[]): Buffer {
  const w = new BinaryWriter(blobs.length * TRAILER_ENTRY_BYTES + PACK_FOOTER_BYTES);
  for (const b of blobs) {
    w.bytes(b.id).u8(b.type).u8(b.compression).u16(0).u32(b.offset).u32(b.storedLength).u32(b.rawLength);
  }
  const entries = w.finish();
  const footer = new BinaryWriter(PACK_FOOTER_BYTES)
    .u32(blobs.length)
    .u32(entries.length)
    .u64(checksum64(entries))
    .bytes(TRAILER_MAGIC)
    .finish();
  return Buffer.concat([entries, footer]);
}

/** Parses the footer (last 24 bytes of a pack); returns how many trailer bytes precede it. */
export function decodeFooter(footer: Buffer, packSize: number, what: string): { count: number; trailerBytes: number; checksum: bigint } {
  if (footer.length !== PACK_FOOTER_BYTES || !footer.subarray(16).equals(TRAILER_MAGIC)) {
    throw new CorruptDataError(`${what}: missing pack trailer (truncated or unsealed pack)`);
  }
  const r = new BinaryReader(footer, 0, footer.length, what);
  const count = r.u32();
  const trailerBytes = r.u32();
  const checksum = r.u64();
  if (trailerBytes !== count * TRAILER_ENTRY_BYTES || trailerBytes + PACK_FOOTER_BYTES + PACK_HEADER_BYTES > packSize) {
    throw new CorruptDataError(`${what}: inconsistent trailer length`);
  }
  return { count, trailerBytes, checksum };
}

export function decodeTrailer(entries: Buffer, footer: { count: number; checksum: bigint }, packSize: number, what: string): PackedBlob[] {
  checkTrailer(entries, footer, packSize, what);
  const blobs: PackedBlob[] = [];
  for (let i = 0; i < footer.count; i++) {
    const b = trailerEntry(entries, i);
    b.id = Buffer.from(b.id);
    blobs.push(b);
  }
  return blobs;
}

/**
 * Checks a trailer's entries (checksum, fields, bounds) without decoding them into objects:
 * a big pack lists hundreds of thousands of blobs, which check then reads one at a time
 * with trailerEntry.
 */
export function checkTrailer(entries: Buffer, footer: { count: number; checksum: bigint }, packSize: number, what: string): void {
  if (checksum64(entries) !== footer.checksum) throw new CorruptDataError(`${what}: trailer checksum mismatch`);
  if (entries.length !== footer.count * TRAILER_ENTRY_BYTES) throw new CorruptDataError(`${what}: inconsistent trailer length`);
  const dataEnd = packSize - entries.length - PACK_FOOTER_BYTES;
  for (let i = 0; i < footer.count; i++) {
    const blob = trailerEntry(entries, i);
    checkBlobFields(blob, what);
    if (blob.offset < PACK_HEADER_BYTES || blob.offset + BLOB_HEADER_BYTES + blob.storedLength > dataEnd) {
      throw new CorruptDataError(`${what}: trailer entry ${i} points outside the pack`);
    }
  }
}

/** Entry `i` of a checked trailer; its id is a view into `entries`. */
export function trailerEntry(entries: Buffer, i: number): PackedBlob {
  const at = i * TRAILER_ENTRY_BYTES;
  return {
    id: entries.subarray(at, at + BLOB_ID_BYTES),
    type: entries[at + 16]!,
    compression: entries[at + 17]!,
    offset: entries.readUInt32LE(at + 20),
    storedLength: entries.readUInt32LE(at + 24),
    rawLength: entries.readUInt32LE(at + 28),
  };
}

/** The checked trailer entries of a whole pack held in memory (check --read-data). */
export function packTrailerEntries(pack: Buffer, what: string): { count: number; entries: Buffer } {
  if (pack.length < PACK_HEADER_BYTES + PACK_FOOTER_BYTES) throw new CorruptDataError(`${what}: too short (${pack.length} bytes)`);
  decodePackHeader(pack.subarray(0, PACK_HEADER_BYTES), what);
  const footer = decodeFooter(pack.subarray(pack.length - PACK_FOOTER_BYTES), pack.length, what);
  const entries = pack.subarray(pack.length - PACK_FOOTER_BYTES - footer.trailerBytes, pack.length - PACK_FOOTER_BYTES);
  checkTrailer(entries, footer, pack.length, what);
  return { count: footer.count, entries };
}

function u32le(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}
