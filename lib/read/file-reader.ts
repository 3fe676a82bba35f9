// Reading file content out of snapshots: a file's chunk list is decoded once when it is
// opened, a read finds its first chunk by binary search, holes read as zeros, and
// decompressed chunks are kept in a byte-bounded cache shared by all open files.
//
// With `recycle` (the mount), chunks live in pooled buffers that are reused once evicted,
// so reading a whole snapshot allocates almost nothing (see util/buffer-pool.ts). A chunk
// is then valid only while it is in the cache: readWith() hands bytes to a synchronous
// callback, looked up in the cache in the same turn, so no eviction can intervene.

import { BlobType } from '../format/pack.js';
import { idToHex } from '../format/blob-id.js';
import { ChunkList, EntryKind, TreeEntry, chunkId, decodeChunkList, findChunk } from '../format/tree.js';
import { BlobReader, StoredBlob } from '../store/blob-store.js';
import { ByteLru } from '../util/lru.js';
import { BufferPool } from '../util/buffer-pool.js';
import { SnapfsError } from '../errors.js';

export const DEFAULT_CHUNK_CACHE_BYTES = 64 * 1024 * 1024;
const CHUNK_OVERHEAD_BYTES = 300;

export interface OpenFile {
  size: number;
  chunks: ChunkList;
}

/** A chunk of a file where it is stored, for native code that reads and verifies it itself. */
export interface StoredChunk extends StoredBlob {
  fileOffset: number;
}

export interface FileReaderOptions {
  cacheBytes?: number;
  /** Reuse evicted chunks' memory; chunk() results are then valid only until the next await. */
  recycle?: boolean;
}

export class FileReader {
  private readonly cache: ByteLru<string, Buffer>;
  private readonly loading = new Map<string, Promise<Buffer>>();
  private readonly pool: BufferPool | undefined;
  private readonly cacheBytes: number;

  constructor(private readonly blobs: BlobReader, opts: FileReaderOptions = {}) {
    const cacheBytes = (this.cacheBytes = opts.cacheBytes ?? DEFAULT_CHUNK_CACHE_BYTES);
    // Evicted chunks refill the pool. Half the cache's size keeps enough for the chunks
    // taken (read-ahead) before the evictions that pay for them (a quarter: twice the
    // new allocations during a tar of the benchmark corpus).
    const pool = opts.recycle ? new BufferPool(cacheBytes / 2) : undefined;
    this.pool = pool;
    this.cache = new ByteLru(cacheBytes, pool ? (chunk) => pool.give(chunk) : undefined);
  }

  open(entry: TreeEntry): OpenFile {
    if (entry.kind !== EntryKind.File || !entry.content) throw new SnapfsError('IS_A_DIRECTORY', 'not a regular file');
    return { size: entry.size, chunks: decodeChunkList(entry.content, entry.size) };
  }

  /**
   * The verified bytes of chunk `i`, from the cache when possible. With `recycle`, use
   * them before the next await (or call again): they may be reused once evicted.
   */
  chunk(file: OpenFile, i: number): Promise<Buffer> {
    const id = chunkId(file.chunks, i);
    const key = idToHex(id);
    const hit = this.cache.get(key);
    if (hit) return Promise.resolve(hit);
    let p = this.loading.get(key);
    if (!p) {
      p = this.blobs.get(id, BlobType.Data, this.pool).then((data) => {
        if (data.length !== file.chunks.lengths[i]) {
          this.pool?.give(data);
          throw new SnapfsError('CORRUPT_DATA', `chunk ${key}: length differs from the file's chunk list`);
        }
        // Charged by its capacity (the memory it holds) plus what a Buffer, its key and its
        // cache slot cost: a million 100-byte chunks are not 100 MB but several times that.
        this.cache.set(key, data, (this.pool ? data.buffer.byteLength : data.length) + CHUNK_OVERHEAD_BYTES);
        return data;
      });
      this.loading.set(key, p);
      const done = (): void => void this.loading.delete(key);
      p.then(done, done);
    }
    return p;
  }

  /**
   * Calls `use` with the bytes of chunk `i`, synchronously after taking them from the cache,
   * so they cannot have been evicted and reused.
   */
  private async withChunk<T>(file: OpenFile, i: number, use: (data: Buffer) => T): Promise<T> {
    for (;;) {
      const data = await this.chunk(file, i);
      if (!this.pool) return use(data);
      const hit = this.cache.get(idToHex(chunkId(file.chunks, i)));
      if (hit) return use(hit);
      // Evicted since it was loaded (or too big for the cache: then it is not the pool's).
      if (data.buffer.byteLength > this.cacheBytes) return use(data);
    }
  }

  /**
   * Calls `use` with up to `length` bytes at `offset` (short only at end of file). The
   * bytes are valid only during the call (a view of a cached chunk when the read lies
   * within one chunk, as most do: no copy and no garbage).
   */
  async readWith<T>(file: OpenFile, offset: number, length: number, use: (data: Buffer) => T): Promise<T> {
    const end = Math.min(file.size, offset + length);
    if (offset >= end) return use(Buffer.alloc(0));
    let i = findChunk(file.chunks, offset);
    if (i < 0) {
      i = firstChunkAfter(file.chunks, offset);
    } else {
      const start = file.chunks.offsets[i]!;
      if (end <= start + file.chunks.lengths[i]!) return this.withChunk(file, i, (data) => use(data.subarray(offset - start, end - start)));
    }
    // Zero-filled: holes need no work. Pooled too: reads across chunk boundaries are common.
    const out = this.pool ? this.pool.take(end - offset).fill(0) : Buffer.alloc(end - offset);
    const parts: Array<Promise<void>> = [];
    for (; i < file.chunks.count && file.chunks.offsets[i]! < end; i++) {
      const start = file.chunks.offsets[i]!;
      parts.push(
        this.withChunk(file, i, (data) => {
          const from = Math.max(offset, start);
          const to = Math.min(end, start + data.length);
          data.copy(out, from - offset, from - start, to - start);
        }),
      );
    }
    // Every part settles before `out` goes back to the pool: none may write to it later.
    const settled = await Promise.allSettled(parts);
    try {
      for (const r of settled) if (r.status === 'rejected') throw r.reason;
      return use(out);
    } finally {
      this.pool?.give(out);
    }
  }

  /** Up to `length` bytes at `offset` (short only at end of file), in a buffer of the caller's. */
  read(file: OpenFile, offset: number, length: number): Promise<Buffer> {
    return this.readWith(file, offset, length, (data) => (this.pool ? Buffer.from(data) : data));
  }

  /**
   * Where each chunk of the file is stored (holes are the gaps between them); with `from`
   * and `to`, only the chunks of that stretch: from the one holding `from` (or the first
   * after it) to the last one starting before `to`.
   */
  async storedChunks(file: OpenFile, from = 0, to = Infinity): Promise<StoredChunk[]> {
    const out: StoredChunk[] = [];
    let first = findChunk(file.chunks, from);
    if (first < 0) first = firstChunkAfter(file.chunks, from);
    for (let i = first; i < file.chunks.count && file.chunks.offsets[i]! < to; i++) {
      const stored = await this.blobs.stored(chunkId(file.chunks, i));
      if (stored.rawLength !== file.chunks.lengths[i]) {
        throw new SnapfsError('CORRUPT_DATA', `chunk ${idToHex(stored.id)}: length differs from the file's chunk list`);
      }
      out.push({ ...stored, fileOffset: file.chunks.offsets[i]! });
    }
    return out;
  }

  /** Starts loading the chunks after `offset` (read-ahead on sequential reads). */
  prefetch(file: OpenFile, offset: number, count: number): void {
    let i = findChunk(file.chunks, offset);
    if (i < 0) i = firstChunkAfter(file.chunks, offset);
    for (let n = 0; n < count && i < file.chunks.count; n++, i++) this.chunk(file, i).catch(() => undefined);
  }
}

function firstChunkAfter(list: ChunkList, pos: number): number {
  let lo = 0;
  let hi = list.count;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list.offsets[mid]! < pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
