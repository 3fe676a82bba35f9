// A repository directory: config, packs, index, snapshot records, writer lock.
// Readers (mount, restore, check) open it without the lock; writers take it first.

import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { xxhash } from '../platform/xxhash.js';
import { RepoLayout } from './layout.js';
import { writeFileAtomic, exists } from './files.js';
import { BlobIndex } from './blob-index.js';
import { PackReader } from './pack-files.js';
import { BlobReader, BlobWriter } from './blob-store.js';
import { CompressionPool, decompressExact } from './compression.js';
import { SnapshotStore } from './snapshot-store.js';
import { WriterLock } from './writer-lock.js';
import { BlobHasher, SECRET_BYTES, idToHex } from '../format/blob-id.js';
import { BLOB_HEADER_BYTES, Compression, decodeBlobHeader } from '../format/pack.js';
import {
  DEFAULT_CHUNKER,
  DEFAULT_COMPRESSION_LEVEL,
  DEFAULT_PACK_TARGET_BYTES,
  REPO_FORMAT_VERSION,
  RepoConfig,
  decodeConfig,
  encodeConfig,
} from '../format/config.js';
import { SnapfsError, errnoCode, fromSystemError } from '../errors.js';

export interface InitOptions {
  chunker?: { minSize: number; avgSize: number; maxSize: number };
  packTargetBytes?: number;
  compressionLevel?: number;
}

export class Repository {
  readonly blobs: BlobReader;
  readonly snapshots: SnapshotStore;
  readonly hasher: BlobHasher;

  private constructor(
    readonly layout: RepoLayout,
    readonly config: RepoConfig,
    readonly index: BlobIndex,
    private readonly packReader: PackReader,
  ) {
    this.hasher = new BlobHasher(Buffer.from(config.hashSecret, 'hex'));
    this.blobs = new BlobReader(index, packReader, this.hasher);
    this.snapshots = new SnapshotStore(layout);
  }

  static async init(root: string, opts: InitOptions = {}): Promise<RepoConfig> {
    const layout = new RepoLayout(root);
    try {
      const entries = await fs.readdir(root);
      if (entries.length > 0) throw new SnapfsError('REPOSITORY_EXISTS', `${root}: directory is not empty; refusing to create a repository there`);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err instanceof SnapfsError ? err : fromSystemError(err, root);
    }
    const chunker = opts.chunker ?? DEFAULT_CHUNKER;
    const config: RepoConfig = {
      format: 'snapfs',
      version: REPO_FORMAT_VERSION,
      id: randomBytes(16).toString('hex'),
      createdAt: new Date().toISOString(),
      chunker: { ...chunker, gearSeed: randomBytes(8).toString('hex') },
      hashSecret: randomBytes(SECRET_BYTES).toString('hex'),
      packTargetBytes: opts.packTargetBytes ?? DEFAULT_PACK_TARGET_BYTES,
      compressionLevel: opts.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL,
    };
    // Validate what the user asked for with the same rules used on open.
    decodeConfig(encodeConfig(config), `${root}/config.json`);
    try {
      await fs.mkdir(root, { recursive: true, mode: 0o700 });
      await fs.chmod(root, 0o700);
      for (const d of [layout.packs, layout.snapshots, layout.run]) await fs.mkdir(d, { mode: 0o700 });
      await fs.mkdir(layout.index, { mode: 0o700 });
      const index = BlobIndex.open(layout.index, false);
      await index.close();
      // config.json last: its presence is what makes the directory a repository.
      await writeFileAtomic(layout.config, encodeConfig(config), 0o600);
    } catch (err) {
      throw fromSystemError(err, `creating repository ${root}`);
    }
    return config;
  }

  /**
   * Reads and validates config.json only: for tools that must work without the index
   * (repair index rebuilds it from the packs).
   */
  static async loadConfig(root: string): Promise<{ layout: RepoLayout; config: RepoConfig }> {
    const layout = new RepoLayout(root);
    let raw: Buffer;
    try {
      raw = await fs.readFile(layout.config);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        if (await looksLikeRepository(layout)) {
          throw new SnapfsError('CORRUPT_DATA', `${root}: config.json is missing, but the directory holds a snapfs repository (packs/, snapshots/): ${CONFIG_IS_THE_KEY}`);
        }
        throw new SnapfsError('NOT_A_REPOSITORY', `${root}: not a snapfs repository (no config.json)`);
      }
      throw fromSystemError(err, `reading ${layout.config}`);
    }
    try {
      return { layout, config: decodeConfig(raw, layout.config) };
    } catch (err) {
      if (err instanceof SnapfsError && err.code === 'NOT_A_REPOSITORY' && (await looksLikeRepository(layout))) {
        throw new SnapfsError('CORRUPT_DATA', `${err.message}; the directory holds a snapfs repository (packs/, snapshots/), so config.json is damaged: ${CONFIG_IS_THE_KEY}`, { cause: err });
      }
      throw err;
    }
  }

  static async open(root: string, opts: { readOnly?: boolean } = {}): Promise<Repository> {
    const { layout, config } = await Repository.loadConfig(root);
    if (!(await exists(`${layout.index}/data.mdb`))) {
      throw new SnapfsError('CORRUPT_DATA', `${root}: the index is missing; run 'snapfs repair index ${root}' to rebuild it from the packs`);
    }
    const index = BlobIndex.open(layout.index, opts.readOnly ?? false);
    return new Repository(layout, config, index, new PackReader(layout));
  }

  /**
   * Takes the writer lock for an operation that writes packs or removes anything, and
   * drops the unsealed packs a crashed writer left (never referenced, safe under the lock).
   */
  static async lockWriter(layout: RepoLayout, operation: string): Promise<WriterLock> {
    const lock = await WriterLock.acquire(layout.lock, operation);
    try {
      await fs.rm(layout.incoming, { recursive: true, force: true });
    } catch (err) {
      await lock.release();
      throw fromSystemError(err, `cleaning ${layout.incoming}`);
    }
    return lock;
  }

  /** Takes the writer lock and returns a writer; the caller must `close` it. */
  async beginWrite(operation: string): Promise<WriteSession> {
    const lock = await Repository.lockWriter(this.layout, operation);
    try {
      const pool = new CompressionPool(this.config.compressionLevel);
      const writer = new BlobWriter(this.layout, this.index, this.hasher, pool, this.config.packTargetBytes);
      return new WriteSession(lock, pool, writer);
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  /**
   * Refuses a config.json whose hash secret is not the one this repository's blobs were
   * stored with (another repository's config copied in): sampled indexed blobs that decode
   * intact but whose content does not give their id under this secret, with none that does.
   * A writer that went on would store new data under ids no reader with the right config
   * could verify. Costs one small read when the secret is right.
   */
  async checkSecret(samples = 8): Promise<void> {
    let mismatched = 0;
    let tried = 0;
    let first = '';
    for (const loc of this.index.allBlobs()) {
      if (tried++ >= samples) break;
      let raw: Buffer;
      try {
        const stored = await this.packReader.read(loc.pack, loc.offset, BLOB_HEADER_BYTES + loc.storedLength);
        const h = decodeBlobHeader(stored.subarray(0, BLOB_HEADER_BYTES), loc.offset, 'blob');
        if (!h.id.equals(loc.id)) continue;
        const body = stored.subarray(BLOB_HEADER_BYTES);
        raw = h.compression === Compression.Zstd ? decompressExact(body, h.rawLength, 'blob') : body;
      } catch {
        continue; // a damaged or missing blob says nothing about the secret
      }
      if (this.hasher.matches(loc.id, raw)) return;
      mismatched++;
      first ||= `blob ${idToHex(loc.id)} in pack ${idToHex(loc.pack)}`;
    }
    if (mismatched > 0) {
      throw new SnapfsError(
        'CORRUPT_DATA',
        `${this.layout.config} does not belong to this repository: ${mismatched} intact blob(s) sampled (${first}, ...) do not match their ids ` +
          `under its hash secret, and none does. Put back this repository's own config.json; nothing was written`,
      );
    }
  }

  /** The FastCDC gear table derived from the repository's seed (256 little-endian u64). */
  gearTable(): Buffer {
    const seed = BigInt('0x' + this.config.chunker.gearSeed);
    const table = Buffer.allocUnsafe(256 * 8);
    const input = Buffer.alloc(4);
    for (let i = 0; i < 256; i++) {
      input.writeUInt32LE(i, 0);
      table.writeBigUInt64LE(xxhash.xxh64(input, seed), i * 8);
    }
    return table;
  }

  async close(): Promise<void> {
    await this.packReader.close();
    await this.index.close();
  }
}

export class WriteSession {
  constructor(
    private readonly lock: WriterLock,
    private readonly pool: CompressionPool,
    readonly writer: BlobWriter,
  ) {}

  async close(): Promise<void> {
    try {
      await this.writer.abort();
      await this.pool.close();
    } finally {
      await this.lock.release();
    }
  }
}

const CONFIG_IS_THE_KEY =
  'it holds the secret that keys every blob id, without which no stored data can be verified or read; ' +
  'put back a copy of config.json from this repository (no other repository\'s will do)';

/** A directory with the repository's own subdirectories, so a lost config.json is damage. */
async function looksLikeRepository(layout: RepoLayout): Promise<boolean> {
  for (const d of [layout.packs, layout.snapshots]) {
    try {
      if (!(await fs.stat(d)).isDirectory()) return false;
    } catch {
      return false;
    }
  }
  return true;
}
