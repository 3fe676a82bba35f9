// The LMDB index over the packs: blob id -> (pack, offset, lengths, type), and the set of
// sealed packs. It is a cache of the pack trailers and can always be rebuilt from them
// (repair index). Writers commit one transaction per sealed pack; readers in other
// processes (the mount) see each commit at their next read transaction.

import { closeSync, fstatSync, openSync, readSync, statfsSync } from 'node:fs';
import type { RootDatabase, Database } from 'lmdb';
import { lmdb } from '../platform/lmdb.js';
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
  // Keys too: a damaged page can hand back a key of any length, which nothing else checks.
  if (id.length !== BLOB_ID_BYTES) throw new CorruptDataError(`index: malformed blob id (${id.length} bytes); run 'snapfs repair index'`);
  if (v.length !== LOCATION_BYTES) throw new CorruptDataError('index: malformed blob location; run \'snapfs repair index\'');
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

/**
 * Locations kept encoded, 50 bytes each (the id, then the index's own value), where a
 * BlobLocation object costs ~350: for the long lists of a damaged pack's blobs in check.
 */
export class LocationList {
  private buf = Buffer.allocUnsafe(64 * (BLOB_ID_BYTES + LOCATION_BYTES));
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(loc: BlobLocation): void {
    const size = BLOB_ID_BYTES + LOCATION_BYTES;
    if ((this.count + 1) * size > this.buf.length) {
      const next = Buffer.allocUnsafe(this.buf.length * 2);
      this.buf.copy(next, 0, 0, this.count * size);
      this.buf = next;
    }
    loc.id.copy(this.buf, this.count * size);
    encodeLocation(loc.pack, loc).copy(this.buf, this.count * size + BLOB_ID_BYTES);
    this.count++;
  }

  *[Symbol.iterator](): Generator<BlobLocation> {
    const size = BLOB_ID_BYTES + LOCATION_BYTES;
    for (let i = 0; i < this.count; i++) {
      const at = i * size;
      yield decodeLocation(Buffer.from(this.buf.subarray(at, at + BLOB_ID_BYTES)), this.buf.subarray(at + BLOB_ID_BYTES, at + size));
    }
  }
}

/** Tables of writers' shortcuts, beside the blobs and packs: facts that let a writer skip
 * work, never needed to read a snapshot, and dropped with the index on a rebuild. */
type ShortcutTable = 'verified' | 'listings';

export class BlobIndex {
  private readonly shortcuts = new Map<ShortcutTable, Database<Buffer, Buffer>>();

  private constructor(
    private readonly dir: string,
    private readonly env: RootDatabase,
    private readonly blobs: Database<Buffer, Buffer>,
    private readonly packs: Database<Buffer, Buffer>,
    private readonly readOnly: boolean,
  ) {}

  static open(dir: string, readOnly: boolean): BlobIndex {
    // LMDB trusts its file: a truncated data.mdb kills the process with SIGBUS on the first
    // read, and lmdb-js crashes (SIGSEGV) on its own error path when mdb_env_open refuses a
    // damaged file. So the file is checked here first, and only a plausible one is opened.
    const exists = checkDataFile(dir);
    // Creating an environment on a full disk crashes lmdb-js (SIGBUS or SIGSEGV) instead of
    // failing: say so before it tries. (An existing one fails with ENOSPC cleanly, and must
    // stay writable on a full disk: forget and prune are how space comes back.)
    if (!exists && !readOnly) requireRoomForNewIndex(dir);
    let env: RootDatabase;
    try {
      env = lmdb.open({ path: dir, maxDbs: 4, readOnly, noMemInit: true, compression: false, permissionsMode: 0o600 } as Parameters<typeof lmdb.open>[0]);
    } catch (err) {
      throw damaged(dir, err);
    }
    const opts = { keyEncoding: 'binary' as const, encoding: 'binary' as const, compression: false };
    try {
      const blobs = env.openDB<Buffer, Buffer>({ name: 'blobs', ...opts });
      const packs = env.openDB<Buffer, Buffer>({ name: 'packs', ...opts });
      // lmdb-js gives no database (rather than an error) when its name cannot be found.
      if (!blobs || !packs) throw new Error('the blobs and packs tables cannot be found');
      if (!readOnly) writableIndexes.add(dir);
      return new BlobIndex(dir, env, blobs, packs, readOnly);
    } catch (err) {
      void env.close().catch(() => undefined);
      throw damaged(dir, err);
    }
  }

  lookup(id: BlobId): BlobLocation | undefined {
    let v: Buffer | undefined;
    try {
      v = this.blobs.getBinary(id);
    } catch (err) {
      throw damaged('index', err);
    }
    return v ? decodeLocation(id, v) : undefined;
  }

  /** Moves the read view to the latest commit (another process may have written). */
  refresh(): void {
    this.env.resetReadTxn();
  }

  has(id: BlobId): boolean {
    try {
      return this.blobs.doesExist(id);
    } catch (err) {
      throw damaged('index', err);
    }
  }

  /**
   * The snapshot of `source` whose chunks are all known to be in this index, if any: the
   * newest one its writer checked or wrote itself. A fact about this index alone, so a
   * rebuild ('repair index', which may drop the blobs of lost packs) starts without any.
   * Writers only; the table is created on first use (older indexes lack it).
   */
  verifiedSnapshot(source: string): string | undefined {
    const v = this.shortcut('verified', Buffer.from(source, 'utf8'));
    return v ? v.toString('utf8') : undefined;
  }

  async setVerifiedSnapshot(source: string, snapshotId: string): Promise<void> {
    this.saveShortcuts('verified', [[Buffer.from(source, 'utf8'), Buffer.from(snapshotId, 'utf8')]], 'recording a verified snapshot');
  }

  /** What lib/backup/listing-cache.ts keeps for the tree `tree`, if anything. Writers only. */
  listing(tree: BlobId): Buffer | undefined {
    return this.shortcut('listings', tree);
  }

  saveListings(entries: ReadonlyArray<readonly [BlobId, Buffer]>): void {
    this.saveShortcuts('listings', entries, 'recording directory listings');
  }

  /** Forgets the listings of the trees `keep` refuses (prune: the table only grows otherwise); returns how many. */
  forgetListings(keep: (tree: BlobId) => boolean): number {
    const table = this.shortcutTable('listings');
    let gone: Buffer[];
    try {
      gone = [...table.getKeys()].filter((k) => !keep(k));
    } catch (err) {
      throw damaged('index', err);
    }
    try {
      this.env.transactionSync(() => {
        for (const k of gone) table.removeSync(k);
      });
    } catch (err) {
      throw damaged('index forgetting directory listings', shortWriteIsFullDisk(err, this.dir));
    }
    return gone.length;
  }

  private shortcut(name: ShortcutTable, key: Buffer): Buffer | undefined {
    try {
      return this.shortcutTable(name).getBinary(key);
    } catch (err) {
      throw damaged('index', err);
    }
  }

  private saveShortcuts(name: ShortcutTable, entries: ReadonlyArray<readonly [Buffer, Buffer]>, what: string): void {
    const table = this.shortcutTable(name);
    // Synchronous: shortcuts are written where a failure (a full disk) must only cost the
    // shortcut, such as after the snapshot committed. An asynchronous put's own commit
    // promise would reject on its own, unhandled, and fail the backup that had succeeded.
    try {
      this.env.transactionSync(() => {
        for (const [k, v] of entries) table.putSync(k, v);
      });
    } catch (err) {
      throw damaged(`index ${what}`, shortWriteIsFullDisk(err, this.dir));
    }
  }

  /** Created on first use (older indexes lack them). */
  private shortcutTable(name: ShortcutTable): Database<Buffer, Buffer> {
    if (this.readOnly) throw new Error(`BlobIndex: the ${name} table is for writers`);
    let table = this.shortcuts.get(name);
    if (!table) {
      try {
        table = this.env.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary', compression: false });
      } catch (err) {
        throw damaged('index', err);
      }
      if (!table) throw damaged('index', new Error(`the ${name} table cannot be opened`));
      this.shortcuts.set(name, table);
    }
    return table;
  }

  /** Records a sealed pack and all its blobs in one transaction. */
  async addPack(pack: Buffer, size: number, blobs: readonly PackedBlob[]): Promise<void> {
    await this.write('recording a pack in the index', () => {
      for (const b of blobs) this.blobs.putSync(b.id, encodeLocation(pack, b));
      this.packs.putSync(pack, packInfoValue(size, blobs.length));
    });
  }

  /**
   * One write transaction, committed synchronously. Inside `fn`, only the *Sync calls.
   * Synchronous on purpose: lmdb-js's asynchronous transaction() commits on a thread of its
   * own, and a commit that fails there on a damaged index (a page not found) is only logged
   * and its promise never settles, so a backup ran out of work and exited 0 without its
   * snapshot. Here every failure is thrown to the caller. The cost is the main thread waiting
   * for one commit per sealed pack (see docs/reliability.md).
   */
  private async write(what: string, fn: () => void): Promise<void> {
    try {
      this.env.transactionSync(fn);
    } catch (err) {
      throw damaged(`index ${what}`, shortWriteIsFullDisk(err, this.dir));
    }
  }

  /** Replaces packs: new locations for moved blobs, then removal of the old packs' entries. */
  async replacePacks(added: Array<{ pack: Buffer; size: number; blobs: readonly PackedBlob[] }>, removedPacks: Buffer[], removedBlobs: BlobId[]): Promise<void> {
    await this.write('replacing packs', () => {
      for (const id of removedBlobs) this.blobs.removeSync(id);
      for (const a of added) {
        for (const b of a.blobs) this.blobs.putSync(b.id, encodeLocation(a.pack, b));
        this.packs.putSync(a.pack, packInfoValue(a.size, a.blobs.length));
      }
      for (const p of removedPacks) this.packs.removeSync(p);
    });
  }

  *allBlobs(): Generator<BlobLocation> {
    for (const { key, value } of guardRange(this.blobs.getRange({}))) yield decodeLocation(Buffer.from(key), value);
  }

  /**
   * How many blobs the index places in each pack (hex id), in one pass that decodes no
   * location: check compares these counts with the packs' trailers.
   */
  blobsPerPack(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const { value } of guardRange(this.blobs.getRange({}))) {
      if (value.length !== LOCATION_BYTES) throw new CorruptDataError('index: malformed blob location');
      const pack = value.toString('hex', 0, 16);
      counts.set(pack, (counts.get(pack) ?? 0) + 1);
    }
    return counts;
  }

  /** The blobs the index places in any of `packs` (hex ids), in one pass over the index. */
  *blobsIn(packs: { has(hex: string): boolean }): Generator<BlobLocation> {
    for (const { key, value } of guardRange(this.blobs.getRange({}))) {
      if (value.length === LOCATION_BYTES && !packs.has(value.toString('hex', 0, 16))) continue;
      yield decodeLocation(Buffer.from(key), value);
    }
  }

  *allPacks(): Generator<PackInfo> {
    for (const { key, value } of guardRange(this.packs.getRange({}))) {
      if (value.length !== 12) throw new CorruptDataError('index: malformed pack entry; run \'snapfs repair index\'');
      yield { id: Buffer.from(key), size: value.readUInt32LE(0) + value.readUInt32LE(4) * 2 ** 32, blobs: value.readUInt32LE(8) };
    }
  }

  packCount(): number {
    try {
      return this.packs.getCount();
    } catch (err) {
      throw damaged('index', err);
    }
  }

  blobCount(): number {
    try {
      return this.blobs.getCount();
    } catch (err) {
      throw damaged('index', err);
    }
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

/** LMDB's own failures (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, ...) on a damaged index file. */
function damaged(what: string, err: unknown): SnapfsError {
  if (err instanceof SnapfsError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  // Operating-system trouble (EACCES, ENOSPC, ...) is not damage; lmdb-js gives the errno
  // of a failed write as a number (28: ENOSPC). EINVAL, EFBIG and EOVERFLOW are the
  // exception: LMDB gets them writing a page at an impossible offset, a page number it read
  // from a damaged page.
  const impossibleWrite = code === 22 || code === 27 || code === 75 || code === 'EINVAL' || code === 'EFBIG' || code === 'EOVERFLOW';
  const systemError = (typeof code === 'string' && /^E[A-Z]+$/.test(code)) || (typeof code === 'number' && code > 0 && code < 200);
  if (systemError && !impossibleWrite) return fromSystemError(err, what);
  return new CorruptDataError(`${what}: the index is damaged (${(err as Error)?.message ?? String(err)}); run 'snapfs repair index'`, { cause: err });
}

function* guardRange<T>(range: Iterable<T>): Generator<T> {
  let it: Iterator<T>;
  try {
    it = range[Symbol.iterator]();
  } catch (err) {
    throw damaged('index', err);
  }
  for (;;) {
    let r: IteratorResult<T>;
    try {
      r = it.next();
    } catch (err) {
      throw damaged('index', err);
    }
    if (r.done) return;
    yield r.value;
  }
}

// Layout of an LMDB data file (liblmdb mdb.c, data format version 2, 64-bit): pages 0 and 1
// are meta pages; each starts with a 24-byte page header (pgno u64, txnid u64, pad u16,
// flags u16, lower u16, upper u16) followed by MDB_meta: magic u32, version u32, address
// u64, mapsize u64, two MDB_db records of 48 bytes (the first one's md_pad is the page
// size), last used page u64, txnid u64. With overlapping sync lmdb-js also keeps a meta
// in the second half of page 0.
const LMDB_PAGE_HEADER = 24;
const LMDB_MAGIC = 0xbeefc0de;
const LMDB_DATA_VERSION = 2;
const LMDB_P_META = 0x08;
const META_MAGIC = 0;
const META_VERSION = 4;
const META_PSIZE = 24;
const META_LAST_PG = 120;
const META_TXNID = 128;

/**
 * Refuses an index whose data.mdb LMDB could not open without crashing the process: empty,
 * shorter than its two meta pages, a first meta page that is not one, or a file shorter than
 * the last page its newest meta page says is in use (a truncated file: reading the missing
 * pages through the memory map raises SIGBUS). A missing file is left to LMDB (a new index).
 */
export function checkDataFile(dir: string): boolean {
  const file = `${dir}/data.mdb`;
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw fromSystemError(err, `opening ${file}`);
  }
  const bad = (why: string): SnapfsError =>
    new CorruptDataError(`index ${file} is damaged (${why}); run 'snapfs repair index' to rebuild it from the packs`);
  try {
    const size = fstatSync(fd).size;
    if (size === 0) throw bad('empty file');
    const head = Buffer.alloc(Math.min(size, 2 * 65536));
    readSync(fd, head, 0, head.length, 0);
    if (head.length < LMDB_PAGE_HEADER + META_TXNID + 8) throw bad(`only ${size} bytes`);
    const flags = head.readUInt16LE(18);
    const m0 = LMDB_PAGE_HEADER;
    if (!(flags & LMDB_P_META) || head.readUInt32LE(m0 + META_MAGIC) !== LMDB_MAGIC) throw bad('no LMDB meta page at its start');
    if ((head.readUInt32LE(m0 + META_VERSION) & 0xffff) !== LMDB_DATA_VERSION) throw bad('unknown LMDB data format version');
    const psize = head.readUInt32LE(m0 + META_PSIZE);
    if (psize < 512 || psize > 65536 || (psize & (psize - 1)) !== 0) throw bad(`implausible page size ${psize}`);
    if (size < 2 * psize) throw bad(`truncated: ${size} bytes, shorter than its two meta pages`);
    let lastPg = -1n;
    let txnid = -1n;
    for (const base of [0, psize >> 1, psize]) {
      const m = base + LMDB_PAGE_HEADER;
      if (base !== 0 && head.readUInt32LE(m + META_PSIZE) !== psize) {
        if (base === psize) throw bad('second meta page is damaged');
        continue; // the half-page meta of overlapping sync is not always there
      }
      const t = head.readBigUInt64LE(m + META_TXNID);
      if (t >= txnid) {
        txnid = t;
        lastPg = head.readBigUInt64LE(m + META_LAST_PG);
      }
    }
    if (lastPg < 1n || (lastPg + 1n) * BigInt(psize) > BigInt(Number.MAX_SAFE_INTEGER)) throw bad('implausible meta page');
    const needed = Number((lastPg + 1n) * BigInt(psize));
    if (size < needed) throw bad(`truncated: ${size} bytes, its last page ends at ${needed}`);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** Room a new, empty index needs with margin (its first pages, the reader table). */
const NEW_INDEX_BYTES = 1024 * 1024;

function requireRoomForNewIndex(dir: string): void {
  let free: number;
  try {
    const s = statfsSync(dir);
    free = s.bavail * s.bsize;
  } catch {
    return; // cannot tell: let LMDB try
  }
  if (free < NEW_INDEX_BYTES) {
    throw new SnapfsError('NO_SPACE', `creating the index in ${dir}: no space left on device (${free} bytes free; at least ${NEW_INDEX_BYTES} needed)`);
  }
}

/**
 * LMDB reports a short write of its pages as EIO (mdb_page_flush): on a disk that is full
 * now, that was the disk filling up, and the user must hear so (and free space), not
 * suspect the hardware.
 */
/** Directories of the indexes this process opened for writing (see explainIndexFailure). */
const writableIndexes = new Set<string>();

/**
 * A failed LMDB commit can also surface outside any call of ours (lmdb-js rejects a promise
 * of its own): the CLI's last-resort handler asks here whether it was the disk filling up.
 */
export function explainIndexFailure(err: unknown): unknown {
  for (const dir of writableIndexes) {
    const explained = shortWriteIsFullDisk(err, dir);
    if (explained !== err) return explained;
  }
  return err;
}

function shortWriteIsFullDisk(err: unknown, dir: string): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (code !== 'EIO' && code !== 5 && !/input\/output error/i.test((err as Error)?.message ?? '')) return err;
  try {
    const s = statfsSync(dir);
    if (s.bavail * s.bsize >= NEW_INDEX_BYTES) return err;
  } catch {
    return err;
  }
  return Object.assign(new Error(`no space left on device (a short write of the index: ${(err as Error).message})`), { code: 'ENOSPC', cause: err });
}

function packInfoValue(size: number, blobs: number): Buffer {
  const v = Buffer.alloc(12);
  v.writeUInt32LE(size % 2 ** 32, 0);
  v.writeUInt32LE(Math.floor(size / 2 ** 32), 4);
  v.writeUInt32LE(blobs, 8);
  return v;
}

export { BLOB_ID_BYTES };
