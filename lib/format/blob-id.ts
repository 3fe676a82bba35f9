// Blob ids: XXH3-128 of the raw bytes, keyed with the repository's secret. Keying means
// someone who controls source content (anyone can send an e-mail to the spool) cannot
// precompute two inputs with the same id and so cannot make one stored chunk stand in
// for another. The 128-bit digest is stored big-endian so hex ids sort like the number.

import { xxhash } from '../platform/xxhash.js';
import { CorruptDataError } from '../errors.js';

export const BLOB_ID_BYTES = 16;
/** XXH3 requires a secret of at least 136 bytes. */
export const SECRET_BYTES = 192;

export type BlobId = Buffer;

export class BlobHasher {
  private readonly secret: Buffer;

  constructor(secret: Uint8Array) {
    if (secret.length < 136) throw new RangeError('hash secret must be at least 136 bytes');
    this.secret = Buffer.from(secret);
  }

  id(data: Uint8Array): BlobId {
    return bigintToId(xxhash.xxh3.xxh128WithSecret(data, this.secret));
  }

  matches(id: BlobId, data: Uint8Array): boolean {
    return this.id(data).equals(id);
  }
}

function bigintToId(v: bigint): BlobId {
  const out = Buffer.allocUnsafe(BLOB_ID_BYTES);
  out.writeBigUInt64BE(v >> 64n, 0);
  out.writeBigUInt64BE(v & 0xffffffffffffffffn, 8);
  return out;
}

export function idToHex(id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
}

export function idFromHex(hex: string, what = 'id'): BlobId {
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new CorruptDataError(`${what}: not a 32-digit hex id: ${JSON.stringify(hex)}`);
  return Buffer.from(hex, 'hex');
}

/** Unkeyed 64-bit checksum for framing (trailers, headers): detects damage, not attacks. */
export function checksum64(data: Uint8Array): bigint {
  return xxhash.xxh3.xxh64(data);
}

/** Fast non-cryptographic 32-bit hash, for deterministic page cuts and the like. */
export function hash32(data: Uint8Array): number {
  return xxhash.xxh32(data, 0);
}
