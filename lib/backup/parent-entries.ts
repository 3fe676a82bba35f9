// The parent snapshot's entries of one directory, read page by page and matched by name
// against the scan (both in name order): a merge join that never holds the whole
// directory, however big.

import { BlobId } from '../format/blob-id.js';
import { TreeEntry, compareNames } from '../format/tree.js';
import { TreeReader } from '../tree/tree-reader.js';
import { SnapfsError } from '../errors.js';

export class ParentEntries {
  private readonly entries: AsyncIterator<TreeEntry> | undefined;
  private head: TreeEntry | undefined;
  private done = false;
  /** Parent entries no scanned name matched (deleted, or excluded now). */
  private unmatched = 0;
  /** The parent tree could not be read to its end. */
  damaged = false;

  /** `onDamage` hears once of a parent tree that cannot be read (damaged repository). */
  constructor(trees: TreeReader, tree: BlobId | undefined, private readonly onDamage: (err: unknown) => void) {
    this.entries = tree ? trees.entries(tree)[Symbol.asyncIterator]() : undefined;
    this.done = !this.entries;
  }

  /** The parent's entry named `name`, if any. Names must come in increasing order. */
  async match(name: Buffer): Promise<TreeEntry | undefined> {
    for (;;) {
      const head = await this.peek();
      if (!head) return undefined;
      const c = compareNames(head.name, name);
      if (c > 0) return undefined;
      this.head = undefined;
      if (c === 0) return head;
      this.unmatched++;
    }
  }

  /** Whether, after the last match, the parent held entries the scan did not. */
  async leftOver(): Promise<boolean> {
    return this.unmatched > 0 || (await this.peek()) !== undefined;
  }

  private async peek(): Promise<TreeEntry | undefined> {
    if (this.head || this.done) return this.head;
    try {
      const next = await this.entries!.next();
      if (next.done) this.done = true;
      else this.head = next.value;
    } catch (err) {
      // A damaged parent snapshot must not stop every later backup of the source: what
      // could not be read is stored as if new (read again).
      if (!(err instanceof SnapfsError) || (err.code !== 'CORRUPT_DATA' && err.code !== 'BLOB_NOT_FOUND')) throw err;
      this.damaged = true;
      this.done = true;
      this.onDamage(err);
    }
    return this.head;
  }
}
