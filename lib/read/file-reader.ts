// Reading file content out of snapshots: a file's chunk list is decoded once when it is
// opened, a read finds its first chunk by binary search, holes read as zeros, and
// decompressed chunks are kept in a byte-bounded cache shared by all open files.

import { BlobType } from '../format/pack.js';
import { idToHex } from '../format/blob-id.js';
import { ChunkList, EntryKind, TreeEntry, chunkId, decodeChunkList, findChunk } from '../format/tree.js';
import { BlobReader } from '../store/blob-store.js';
import { ByteLru } from '../util/lru.js';
import { SnapfsError } from '../errors.js';

export const DEFAULT_CHUNK_CACHE_BYTES = 64 * 1024 * 1024;

export interface OpenFile {
  size: number;
  chunks: ChunkList;
}

export class FileReader {
  private readonly cache: ByteLru<string, Buffer>;
  private readonly loading = new Map<string, Promise<Buffer>>();

  constructor(private readonly blobs: BlobReader, cacheBytes = DEFAULT_CHUNK_CACHE_BYTES) {
    this.cache = new ByteLru(cacheBytes);
  }

  open(entry: TreeEntry): OpenFile {
    if (entry.kind !== EntryKind.File || !entry.content) throw new SnapfsError('IS_A_DIRECTORY', 'not a regular file');
    return { size: entry.size, chunks: decodeChunkList(entry.content, entry.size) };
  }

  /** The verified bytes of chunk `i`, from the cache when possible. */
  chunk(file: OpenFile, i: number): Promise<Buffer> {
    const id = chunkId(file.chunks, i);
    const key = idToHex(id);
    const hit = this.cache.get(key);
    if (hit) return Promise.resolve(hit);
    let p = this.loading.get(key);
    if (!p) {
      p = this.blobs.get(id, BlobType.Data).then((data) => {
        if (data.length !== file.chunks.lengths[i]) throw new SnapfsError('CORRUPT_DATA', `chunk ${key}: length differs from the file's chunk list`);
        this.cache.set(key, data, data.length);
        return data;
      });
      this.loading.set(key, p);
      const done = (): void => void this.loading.delete(key);
      p.then(done, done);
    }
    return p;
  }

  /** Reads up to `length` bytes at `offset` (short only at end of file). */
  async read(file: OpenFile, offset: number, length: number): Promise<Buffer> {
    const end = Math.min(file.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    let i = findChunk(file.chunks, offset);
    if (i < 0) {
      i = firstChunkAfter(file.chunks, offset);
    } else {
      const start = file.chunks.offsets[i]!;
      // Within one chunk (most reads): a view of the cached chunk, no copy and no new
      // buffer whose garbage would pile up between collections. Chunks are never mutated.
      if (end <= start + file.chunks.lengths[i]!) return (await this.chunk(file, i)).subarray(offset - start, end - start);
    }
    const out = Buffer.alloc(end - offset); // zero-filled: holes need no work
    const parts: Array<Promise<void>> = [];
    for (; i < file.chunks.count && file.chunks.offsets[i]! < end; i++) {
      const start = file.chunks.offsets[i]!;
      const idx = i;
      parts.push(
        this.chunk(file, idx).then((data) => {
          const from = Math.max(offset, start);
          const to = Math.min(end, start + data.length);
          data.copy(out, from - offset, from - start, to - start);
        }),
      );
    }
    await Promise.all(parts);
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
