// The parent snapshot's entries of one directory, read page by page and matched by name
// against the scan (both in name order): a merge join that never holds the whole
// directory, however big. Matching within a page is synchronous: only reading the next
// page waits, so the common no-change walk costs no promise per entry. Each page read
// starts reading the trees of its subdirectories, which the walk visits next.

import { BlobId } from '../format/blob-id.js';
import { TreeEntry } from '../format/tree.js';
import { TreeReader } from '../tree/tree-reader.js';
import { ScanCursor } from '../platform/native.js';
import { SnapfsError } from '../errors.js';

const NO_ENTRIES: readonly TreeEntry[] = [];

export class ParentEntries {
  private readonly pages: AsyncIterator<readonly TreeEntry[]> | undefined;
  private page = NO_ENTRIES;
  private pos = 0;
  /** The next page, being read. */
  private loading: Promise<void> | undefined;
  private done = false;
  /** Parent entries no scanned name matched (deleted, or excluded now). */
  private unmatched = 0;
  /** The parent tree could not be read to its end. */
  damaged = false;

  /**
   * Starts reading the first page at once (it overlaps the directory's scan). `onDamage`
   * hears once of a parent tree that cannot be read (damaged repository).
   */
  constructor(private readonly trees: TreeReader, tree: BlobId | undefined, private readonly onDamage: (err: unknown) => void) {
    this.pages = tree ? trees.pages(tree)[Symbol.asyncIterator]() : undefined;
    this.done = !this.pages;
    if (this.pages) {
      this.loading = this.nextPage();
      this.loading.catch(() => undefined); // thrown to whoever waits for the page
    }
  }

  /**
   * The parent's entry named like the scan's current record, if any. Names must come in
   * increasing order. A promise only when the next page must be read first.
   */
  match(scan: ScanCursor): TreeEntry | undefined | Promise<TreeEntry | undefined> {
    for (;;) {
      if (this.pos === this.page.length) {
        if (this.done) return undefined;
        return this.fill().then(() => this.match(scan));
      }
      const head = this.page[this.pos]!;
      const c = scan.compareName(head.name);
      if (c < 0) return undefined;
      this.pos++;
      if (c === 0) return head;
      this.unmatched++;
      if (head.subtree) this.trees.dropAhead(head.subtree); // its directory is gone
    }
  }

  /** Whether a parent entry was passed over so far (deleted, or excluded now). */
  get skipped(): boolean {
    return this.unmatched > 0;
  }

  /** Whether, after the last match, the parent held entries the scan did not. */
  async leftOver(): Promise<boolean> {
    while (this.pos === this.page.length && !this.done) await this.fill();
    return this.unmatched > 0 || this.pos < this.page.length;
  }

  private fill(): Promise<void> {
    this.loading ??= this.nextPage();
    return this.loading;
  }

  private async nextPage(): Promise<void> {
    let next;
    try {
      next = await this.pages!.next();
    } catch (err) {
      // Anything but damage fails the backup: `loading` stays this rejected promise, so
      // the next match or leftOver throws it.
      if (!(err instanceof SnapfsError) || (err.code !== 'CORRUPT_DATA' && err.code !== 'BLOB_NOT_FOUND')) throw err;
      // A damaged parent snapshot must not stop every later backup of the source: what
      // could not be read is stored as if new (read again).
      this.loading = undefined;
      this.done = true;
      this.damaged = true;
      this.onDamage(err);
      return;
    }
    this.loading = undefined;
    if (next.done) this.done = true;
    else {
      this.page = next.value;
      this.pos = 0;
      // The subdirectories' own trees are wanted next: read them now, together.
      this.trees.prefetchSubtrees(this.page);
    }
  }
}
