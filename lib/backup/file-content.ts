// Reads one changed file and stores its content: data regions only (holes are skipped,
// found with SEEK_DATA/SEEK_HOLE), large sequential reads, FastCDC cuts, one blob per
// new chunk. A file that changes while it is read is read again; if it keeps changing,
// what was read is kept and the entry is marked so the next backup reads it again.

import { promises as fs, constants, BigIntStats } from 'node:fs';
import { FileStat, NativeError, SmallFile, dataRegions, readSmallFiles } from '../platform/native.js';
import { Chunker } from '../chunk/chunker.js';
import { ChunkerParams } from '../format/config.js';
import { BlobType } from '../format/pack.js';
import { ChunkRef, encodeChunkList } from '../format/tree.js';
import { BlobWriter } from '../store/blob-store.js';

const READ_BLOCK_BYTES = 8 * 1024 * 1024;
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

export class FileContentReader {
  constructor(
    private readonly writer: BlobWriter,
    private readonly gear: Buffer,
    private readonly chunking: Pick<ChunkerParams, 'minSize' | 'avgSize' | 'maxSize'>,
  ) {}

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

  /** Reads many small files in one threadpool job (see readSmallFiles). */
  readBatch(paths: Buffer[]): Promise<Array<SmallFile | NativeError>> {
    return readSmallFiles(paths, this.chunking.minSize);
  }

  /**
   * Stores one file. `pre` is its result from readBatch, used when it holds the whole,
   * unchanged file; anything else (large, sparse, changed meanwhile) is read here.
   */
  async read(path: Buffer, onBytes: (n: number) => void, pre?: SmallFile): Promise<FileContent> {
    if (pre?.status === 'not-regular') throw Object.assign(new Error('not a regular file any more'), { code: 'ENOTREG' });
    if (pre?.status === 'ok' && !pre.changed) {
      const chunks: ChunkRef[] = [];
      if (pre.data.length > 0) {
        await this.writer.waitForRoom();
        const id = this.writer.id(pre.data);
        chunks.push({ offset: 0, length: pre.data.length, id });
        await this.writer.put(BlobType.Data, pre.data, id);
      }
      onBytes(pre.data.length);
      return { stat: pre.stat, xattrs: pre.xattrs, content: encodeChunkList(chunks), size: pre.data.length, bytesRead: pre.data.length, unstable: false };
    }
    return this.readLarge(path, onBytes);
  }

  private async readLarge(path: Buffer, onBytes: (n: number) => void): Promise<FileContent> {
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
    const stores: Array<Promise<unknown>> = [];
    let bytes = 0;
    const block = Buffer.allocUnsafe(Math.min(READ_BLOCK_BYTES, Math.max(size, 1)));
    for (let r = 0; r < regions.length; r += 2) {
      const start = regions[r]!;
      const end = regions[r + 1]!;
      const chunker = new Chunker(this.gear, this.chunking);
      let pos = start;
      let chunkOffset = start;
      while (pos < end) {
        const want = Math.min(block.length, end - pos);
        const { bytesRead } = await fh.read(block, 0, want, pos);
        if (bytesRead === 0) break; // shrank under us; the stat check will notice
        pos += bytesRead;
        bytes += bytesRead;
        onBytes(bytesRead);
        const eof = pos >= end;
        for (const chunk of chunker.push(block.subarray(0, bytesRead), eof)) {
          await this.writer.waitForRoom();
          const id = this.writer.id(chunk);
          chunks.push({ offset: chunkOffset, length: chunk.length, id });
          chunkOffset += chunk.length;
          stores.push(this.writer.put(BlobType.Data, chunk, id));
        }
      }
      if (pos < end) {
        // Short read: flush what the chunker still holds so the chunk list stays consistent.
        for (const chunk of chunker.push(Buffer.alloc(0), true)) {
          const id = this.writer.id(chunk);
          chunks.push({ offset: chunkOffset, length: chunk.length, id });
          chunkOffset += chunk.length;
          stores.push(this.writer.put(BlobType.Data, chunk, id));
        }
        break;
      }
    }
    await Promise.all(stores);
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
