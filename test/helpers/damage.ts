// Damaging one stored blob on purpose: a chunk of a file, or a directory's tree, found
// through the real index, with one bit flipped in the middle of its stored bytes.
import { promises as fs } from 'node:fs';
import { Repository } from '../../lib/store/repository.js';
import { SnapshotCatalog } from '../../lib/snapshot/catalog.js';
import { TreeReader } from '../../lib/tree/tree-reader.js';
import { chunkId, decodeChunkList } from '../../lib/format/tree.js';
import { idFromHex, idToHex } from '../../lib/format/blob-id.js';
import { BLOB_HEADER_BYTES } from '../../lib/format/pack.js';

/**
 * Flips a bit in the middle of the stored bytes of a chunk of `file` (a path in
 * source@last): its first, or chunk number `which`, or the one in the middle of its chunk
 * list. Returns where that chunk lies in the file.
 */
export async function flipStoredByte(repo: string, source: string, file: string, which: number | 'middle' = 0): Promise<{ fileOffset: number; length: number }> {
  const r = await Repository.open(repo, { readOnly: true });
  let packFile: string;
  let at: number;
  let damaged: { fileOffset: number; length: number };
  try {
    const snap = await new SnapshotCatalog(r.snapshots).resolve(source, 'last');
    const parts = file.split('/').map((p) => Buffer.from(p));
    const { entry } = await new TreeReader(r.blobs).resolve(idFromHex(snap.root), parts, file);
    const chunks = decodeChunkList(entry!.content!, entry!.size);
    const i = which === 'middle' ? Math.floor(chunks.count / 2) : which;
    if (i < 0 || i >= chunks.count) throw new Error(`${file} has no chunk ${i} (${chunks.count} chunks)`);
    damaged = { fileOffset: chunks.offsets[i]!, length: chunks.lengths[i]! };
    const loc = r.index.lookup(chunkId(chunks, i))!;
    packFile = r.layout.packFile(idToHex(loc.pack));
    at = loc.offset + BLOB_HEADER_BYTES + Math.floor(loc.storedLength / 2);
  } finally {
    await r.close();
  }
  await flipBit(packFile, at);
  return damaged;
}

/** Flips a bit in the middle of the stored bytes of the tree of directory `dir` (a path in source@last). */
export async function flipTreeByte(repo: string, source: string, dir: string): Promise<void> {
  const r = await Repository.open(repo, { readOnly: true });
  let packFile: string;
  let at: number;
  try {
    const snap = await new SnapshotCatalog(r.snapshots).resolve(source, 'last');
    const parts = dir.split('/').map((p) => Buffer.from(p));
    const { entry } = await new TreeReader(r.blobs).resolve(idFromHex(snap.root), parts, dir);
    if (!entry?.subtree) throw new Error(`${dir} is not a directory with a tree`);
    const loc = r.index.lookup(entry.subtree)!;
    packFile = r.layout.packFile(idToHex(loc.pack));
    at = loc.offset + BLOB_HEADER_BYTES + Math.floor(loc.storedLength / 2);
  } finally {
    await r.close();
  }
  await flipBit(packFile, at);
}

async function flipBit(file: string, at: number): Promise<void> {
  const fh = await fs.open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0]! ^= 0x10;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}
