// Listings a tree was made from. A directory's tree is a function of its listing (every
// entry's lstat but atime, see scanDir) as long as every listed name became an entry
// unchanged (no exclusion, no warning, nothing vanished): each file then matches its entry
// by size, mtime, ctime and inode, and keeps it. So when a directory lists exactly as it
// did when its previous tree was made, the writer needs neither that tree's pages nor a
// comparison per entry: it reuses the tree, once its subdirectories (walked all the same:
// a change may lie deeper) come back with their previous trees too. Like git's index or
// borg's files cache, but keyed by content: the previous tree's id.
//
// Kept in the index's `listings` table: tree id -> the fingerprint of its listing (keyed
// XXH3-128, as blob ids are), the backup options it depended on and its subdirectories'
// trees, in name order. A checksum over key and value guards against a damaged table:
// anything that does not verify is simply not known. Prune forgets the trees it deletes.

import { BlobHasher, BlobId, BLOB_ID_BYTES, checksum64 } from '../format/blob-id.js';
import { BlobIndex } from '../store/blob-index.js';

const VERSION = 1;
/** Version (u8), options digest (u64), fingerprint, subdirectory count (u32); then the subtrees and a checksum (u64). */
const FINGERPRINT_AT = 1 + 8;
const COUNT_AT = FINGERPRINT_AT + BLOB_ID_BYTES;
const HEAD_BYTES = COUNT_AT + 4;
/** Listings remembered before they are written (one index transaction each time). */
const SAVE_EVERY = 8192;

export interface ListingOptions {
  excludes: readonly string[];
  oneFileSystem: boolean;
  /** The source root's device (the one-file-system boundary). */
  rootDevice: number;
}

export interface KnownListing {
  fingerprint: Buffer;
  /** The trees of its subdirectories, in name order. */
  subtrees: BlobId[];
}

export class ListingCache {
  private readonly optionsDigest: bigint;
  private pending: Array<readonly [BlobId, Buffer]> = [];
  private failed = false;

  /**
   * `trusted`: whether the trees this backup starts from may be reused unread, i.e. every
   * chunk of the parent snapshot is known to be indexed (BlobIndex.verifiedSnapshot); when
   * not, nothing is looked up, but what this backup makes is still remembered.
   */
  constructor(
    private readonly index: BlobIndex,
    private readonly hasher: BlobHasher,
    options: ListingOptions,
    private readonly trusted: boolean,
  ) {
    // The same listing gives another tree under other options: new exclusions, or a mount
    // point recorded empty.
    const opts = JSON.stringify([options.excludes, options.oneFileSystem, options.oneFileSystem ? options.rootDevice : 0]);
    this.optionsDigest = checksum64(Buffer.from(opts, 'utf8'));
  }

  fingerprint(listing: Buffer): Buffer {
    return this.hasher.id(listing);
  }

  /** How `tree` was listed when it was made, if that is known and may be relied on. */
  lookup(tree: BlobId): KnownListing | undefined {
    if (!this.trusted) return undefined;
    const v = this.index.listing(tree);
    if (!v || v.length < HEAD_BYTES + 8 || v[0] !== VERSION) return undefined;
    const body = v.subarray(0, v.length - 8);
    if (checksum64(Buffer.concat([tree, body])) !== v.readBigUInt64LE(v.length - 8)) return undefined;
    if (v.readBigUInt64LE(1) !== this.optionsDigest) return undefined;
    const count = v.readUInt32LE(COUNT_AT);
    if (body.length !== HEAD_BYTES + count * BLOB_ID_BYTES) return undefined;
    const subtrees: BlobId[] = [];
    for (let i = 0; i < count; i++) {
      const at = HEAD_BYTES + i * BLOB_ID_BYTES;
      subtrees.push(Buffer.from(body.subarray(at, at + BLOB_ID_BYTES)));
    }
    return { fingerprint: Buffer.from(body.subarray(FINGERPRINT_AT, COUNT_AT)), subtrees };
  }

  /** `tree` was made from a listing with this fingerprint, every listed name an entry. */
  remember(tree: BlobId, fingerprint: Buffer, subtrees: readonly BlobId[]): void {
    if (this.failed) return;
    const body = Buffer.allocUnsafe(HEAD_BYTES + subtrees.length * BLOB_ID_BYTES);
    body[0] = VERSION;
    body.writeBigUInt64LE(this.optionsDigest, 1);
    fingerprint.copy(body, FINGERPRINT_AT);
    body.writeUInt32LE(subtrees.length, COUNT_AT);
    subtrees.forEach((id, i) => id.copy(body, HEAD_BYTES + i * BLOB_ID_BYTES));
    const sum = Buffer.allocUnsafe(8);
    sum.writeBigUInt64LE(checksum64(Buffer.concat([tree, body])));
    this.pending.push([Buffer.from(tree), Buffer.concat([body, sum])]);
    if (this.pending.length >= SAVE_EVERY) this.save();
  }

  /**
   * Writes what was remembered. Each entry is true whatever becomes of this backup, so this
   * may happen before the snapshot commits. A failure (a full disk) costs only the
   * shortcut: the backup itself goes on, and fails on its own if it must.
   */
  save(): void {
    const entries = this.pending;
    this.pending = [];
    if (this.failed || entries.length === 0) return;
    try {
      this.index.saveListings(entries);
    } catch {
      this.failed = true;
    }
  }
}
