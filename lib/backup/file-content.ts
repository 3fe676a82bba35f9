// Reads changed files and stores their content: small files many at a time, whole;
// others by data regions only (holes are skipped, found with SEEK_DATA/SEEK_HOLE), in large
// sequential reads, FastCDC cuts, one blob per new chunk. A file that changes while it is
// read is read again; if it keeps changing, what was read is kept and the entry is marked so
// the next backup reads it again. Every byte read is counted against one byte budget until
// it is stored, which bounds the memory of a backup whatever the size of the tree.

import { promises as fs, constants, BigIntStats } from 'node:fs';
import { FileStat, NativeError, SmallFile, dataRegions, readSmallFiles } from '../platform/native.js';
import { Chunker } from '../chunk/chunker.js';
import { ChunkerParams } from '../format/config.js';
import { BlobType } from '../format/pack.js';
import { ChunkRef, encodeChunkList } from '../format/tree.js';
import { BlobWriter } from '../store/blob-store.js';
import { ByteBudget } from '../util/byte-budget.js';
import { ReadBlocks } from './read-blocks.js';
import { Semaphore, settleAll } from '../util/semaphore.js';

const READ_BLOCK_BYTES = 8 * 1024 * 1024;
/**
 * Idle read blocks kept for reuse (the budget bounds those in use): a new block is faulted
 * in page by page as it is first read into, which costs more than the read itself under a
 * virtualized MMU.
 */
const IDLE_BLOCKS = 8;
const MAX_ATTEMPTS = 3;

export interface FileContent {
  /** fstat of the open file, taken before reading. */
  stat: FileStat;
  /** The file's xattrs when they were read along with it (small files). */
  xattrs?: Array<[Buffer, Buffer]>;
  content: Buffer;
  /** The file's size when it was read (the chunk list never extends past it). */
  size: number;
  bytesRead: number;
  /** True when the file kept changing while it was read. */
  unstable: boolean;
}

/** One file of storeBatch: stored, or left for `read` (SmallFile), or failed. */
export type BatchResult = FileContent | SmallFile | NativeError;

export class FileContentReader {
  /** Bytes read but not yet stored. */
  private readonly budget: ByteBudget;
  private readonly blocks: ReadBlocks;

  /**
   * `budgetBytes` bounds the file data in memory (raised to two read blocks if chunks are
   * huge); `io` bounds concurrent reads, shared with the caller's other file system work.
   */
  constructor(
    private readonly writer: BlobWriter,
    private readonly gear: Buffer,
    private readonly chunking: Pick<ChunkerParams, 'minSize' | 'avgSize' | 'maxSize'>,
    budgetBytes: number,
    private readonly io: Semaphore,
  ) {
    // Room for the carried tail (under one chunk) and still a large read.
    const blockBytes = Math.max(READ_BLOCK_BYTES, 2 * chunking.maxSize);
    this.budget = new ByteBudget(Math.max(budgetBytes, 2 * blockBytes));
    this.blocks = new ReadBlocks(blockBytes, this.budget, IDLE_BLOCKS);
  }

  /** Opens without following symlinks and without touching atime where permitted. */
  private async openFile(path: Buffer): Promise<fs.FileHandle> {
    const flags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
    try {
      return await fs.open(path, flags | constants.O_NOATIME);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      return fs.open(path, flags);
    }
  }

  /** Files up to this size are one chunk however they are read, so they can be batched. */
  get smallFileBytes(): number {
    return this.chunking.minSize;
  }

  /**
   * Reads many small files in one threadpool job (see readSmallFiles) and stores those read
   * whole and unchanged. `sizes` are the listed sizes, to reserve memory before reading.
   * Anything else (changed meanwhile, grown, sparse) comes back as read, for `read`.
   */
  async storeBatch(paths: Buffer[], sizes: number[]): Promise<BatchResult[]> {
    const max = this.smallFileBytes;
    // A file that grew since it was listed is read up to max + 1 bytes at most.
    const reserved = await this.budget.acquire(sizes.reduce((sum, n) => sum + Math.min(n, max) + 1, 0));
    try {
      this.writer.throwIfFailed();
      const read = await this.io.run(() => readSmallFiles(paths, max));
      const stores: Array<Promise<unknown>> = [];
      const results = read.map((r): BatchResult => {
        if (r instanceof Error || r.status !== 'ok' || r.changed) return r;
        const chunks: ChunkRef[] = [];
        if (r.data.length > 0) {
          const id = this.writer.id(r.data);
          chunks.push({ offset: 0, length: r.data.length, id });
          stores.push(this.writer.put(BlobType.Data, r.data, id));
        }
        const size = r.data.length;
        return { stat: r.stat, xattrs: r.xattrs, content: encodeChunkList(chunks), size, bytesRead: size, unstable: false };
      });
      await settleAll(stores);
      return results;
    } finally {
      this.budget.release(reserved);
    }
  }

  /** Stores one file, reading it in blocks. */
  async read(path: Buffer, onBytes: (n: number) => void): Promise<FileContent> {
    const fh = await this.openFile(path);
    try {
      let bytesRead = 0;
      for (let attempt = 1; ; attempt++) {
        const before = await fh.stat({ bigint: true });
        if (!before.isFile()) throw Object.assign(new Error('not a regular file any more'), { code: 'ENOTREG' });
        const size = Number(before.size);
        const { chunks, bytes } = await this.readRegions(fh, size, onBytes);
        bytesRead += bytes;
        const after = await fh.stat({ bigint: true });
        const stable = after.size === before.size && after.mtimeNs === before.mtimeNs && after.ctimeNs === before.ctimeNs && bytes <= size;
        if (stable || attempt === MAX_ATTEMPTS) {
          // Reads never go past `size`, so the chunk list always fits the recorded size.
          return { stat: toFileStat(before), content: encodeChunkList(chunks), size, bytesRead, unstable: !stable };
        }
      }
    } finally {
      await fh.close();
    }
  }

  private async readRegions(fh: fs.FileHandle, size: number, onBytes: (n: number) => void): Promise<{ chunks: ChunkRef[]; bytes: number }> {
    const regions = size === 0 ? [] : dataRegions(fh.fd, size);
    const chunks: ChunkRef[] = [];
    // One entry per block read: settles once the block's chunks are stored and the block
    // is given back.
    const blocks: Array<Promise<unknown>> = [];
    let bytes = 0;
    try {
      for (let r = 0; r < regions.length; r += 2) {
        const start = regions[r]!;
        const end = regions[r + 1]!;
        const chunker = new Chunker(this.gear, this.chunking);
        let pos = start;
        let chunkOffset = start;
        let shortRead = false;
        while (pos < end && !shortRead) {
          const block = await this.blocks.take();
          const stores: Array<Promise<unknown>> = [];
          try {
            this.writer.throwIfFailed();
            const at = chunker.refill(block);
            const { bytesRead } = await fh.read(block, at, Math.min(block.length - at, end - pos), pos);
            // Shrank under us: what the chunker holds is flushed so the chunk list stays
            // consistent; the stat check will notice.
            shortRead = bytesRead === 0;
            pos += bytesRead;
            bytes += bytesRead;
            onBytes(bytesRead);
            for (const chunk of chunker.cut(block, at + bytesRead, pos >= end || shortRead)) {
              const id = this.writer.id(chunk);
              chunks.push({ offset: chunkOffset, length: chunk.length, id });
              chunkOffset += chunk.length;
              stores.push(this.writer.put(BlobType.Data, chunk, id));
            }
          } finally {
            // The block is reused once nothing reads it: every put has settled.
            const stored = settleAll(stores).finally(() => this.blocks.give(block));
            stored.catch(() => undefined); // observed below, once every block is done
            blocks.push(stored);
          }
        }
        if (shortRead) break;
      }
    } finally {
      // Also on failure: the budget is only free again once every block is done.
      await Promise.allSettled(blocks);
    }
    await settleAll(blocks);
    return { chunks, bytes };
  }
}

function toFileStat(st: BigIntStats): FileStat {
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    nlink: Number(st.nlink),
    ino: st.ino,
    size: Number(st.size),
    blocks: Number(st.blocks),
    rdev: Number(st.rdev),
    dev: Number(st.dev),
    atimeNs: st.atimeNs,
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
  };
}
