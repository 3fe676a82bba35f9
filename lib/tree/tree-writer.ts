// Stores a directory's entries as tree blobs: one leaf page for a small directory, or
// content-defined leaf pages plus an index node for a big one.

import { BlobId } from '../format/blob-id.js';
import { BlobType } from '../format/pack.js';
import { TreeEntry, encodeIndex, paginate } from '../format/tree.js';
import { BlobWriter } from '../store/blob-store.js';

/** Entries must be sorted by name (Buffer.compare). Returns the directory's tree id. */
export async function writeTree(writer: BlobWriter, entries: readonly TreeEntry[]): Promise<BlobId> {
  const pages = paginate(entries);
  const stored = await Promise.all(pages.map((p) => writer.put(BlobType.Tree, p.bytes)));
  if (pages.length === 1) return stored[0]!.id;
  const index = encodeIndex(pages.map((p, i) => ({ firstName: p.firstName, count: p.count, id: stored[i]!.id })));
  return (await writer.put(BlobType.Tree, index)).id;
}
