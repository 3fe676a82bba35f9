// Damaging one stored chunk on purpose: the pack bytes of a file's first chunk, found
// through the real index, with one bit flipped in the middle of its stored bytes.
import { promises as fs } from 'node:fs';
import { Repository } from '../../lib/store/repository.js';
import { SnapshotCatalog } from '../../lib/snapshot/catalog.js';
import { TreeReader } from '../../lib/tree/tree-reader.js';
import { chunkId, decodeChunkList } from '../../lib/format/tree.js';
import { idFromHex, idToHex } from '../../lib/format/blob-id.js';
import { BLOB_HEADER_BYTES } from '../../lib/format/pack.js';

/** Flips a bit in the middle of the stored bytes of the first chunk of `file` (a path in source@last). */
export async function flipStoredByte(repo: string, source: string, file: string): Promise<void> {
  const r = await Repository.open(repo, { readOnly: true });
  let packFile: string;
  let at: number;
  try {
    const snap = await new SnapshotCatalog(r.snapshots).resolve(source, 'last');
    const parts = file.split('/').map((p) => Buffer.from(p));
    const { entry } = await new TreeReader(r.blobs).resolve(idFromHex(snap.root), parts, file);
    const chunks = decodeChunkList(entry!.content!, entry!.size);
    const loc = r.index.lookup(chunkId(chunks, 0))!;
    packFile = r.layout.packFile(idToHex(loc.pack));
    at = loc.offset + BLOB_HEADER_BYTES + Math.floor(loc.storedLength / 2);
  } finally {
    await r.close();
  }
  const fh = await fs.open(packFile, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0]! ^= 0x10;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}
