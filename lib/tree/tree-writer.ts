// Stores a directory's entries as tree blobs: one leaf page for a small directory, or
// content-defined leaf pages plus an index node for a big one.

import { BlobId } from '../format/blob-id.js';
import { BlobType } from '../format/pack.js';
import { PageCutter, TreeEntry, TreePage, encodeIndex } from '../format/tree.js';
import { BlobWriter } from '../store/blob-store.js';

/**
 * Pages held back, while the directory may still turn out identical to its parent's, up
 * to this many bytes; past it they are stored anyway (for a huge directory that changed
 * nothing, that costs writes that deduplicate to nothing, not memory).
 */
const HOLD_LIMIT_BYTES = 8 * 1024 * 1024;

/**
 * Entries held back unencoded first, up to this many: a directory that turns out identical
 * to its parent's (the common case) is then never encoded at all. Past it they are only
 * counted when the caller can give them again (`replay`), else cut into pages, held as
 * above.
 */
const HOLD_ENTRIES = 4096;

/** Pages handed to the writer and not yet stored, at most. */
const PAGES_IN_FLIGHT = 8;

interface StoredPage {
  firstName: Buffer;
  count: number;
  id: Promise<BlobId>;
}

/**
 * Builds one directory's tree from entries given in name order, storing each page as soon
 * as it is cut: memory stays bounded whatever the size of the directory.
 */
export class TreeBuilder {
  private readonly cutter = new PageCutter();
  private readonly pages: StoredPage[] = [];
  private held: TreePage[] = [];
  private heldBytes = 0;
  /** Entries not yet given to the cutter (while holding). */
  private heldEntries: TreeEntry[] = [];
  /** Or, past HOLD_ENTRIES: how many were held, the first ones `replay` gives, and the last. */
  private counted = 0;
  private lastCounted: TreeEntry | undefined;

  /**
   * `holding`: keep pages unstored until `stopHolding` (the caller may yet reuse an
   * existing tree and `discard` this one). `replay`: for a caller that holds only while
   * each entry it adds is the next one of that existing tree, which `replay` gives again
   * from its first: a huge unchanged directory is then neither encoded nor kept.
   */
  constructor(
    private readonly writer: BlobWriter,
    private holding = false,
    private readonly replay?: () => AsyncIterable<TreeEntry>,
  ) {}

  /** Adds the next entry; a promise only when a page had to be stored (await it then). */
  add(e: TreeEntry): Promise<void> | undefined {
    if (this.holding) {
      if (this.counted === 0 && this.heldEntries.length < HOLD_ENTRIES) {
        this.heldEntries.push(e);
        return undefined;
      }
      if (this.replay) {
        if (this.counted === 0) {
          this.counted = this.heldEntries.length;
          this.heldEntries = [];
        }
        this.counted++;
        this.lastCounted = e;
        return undefined;
      }
    }
    return this.cut(e);
  }

  private async cut(e: TreeEntry): Promise<void> {
    await this.cutHeldEntries();
    const page = this.cutter.add(e);
    if (page) await this.page(page);
  }

  private async cutHeldEntries(): Promise<void> {
    if (this.counted > 0) await this.cutReplayed();
    const entries = this.heldEntries;
    this.heldEntries = [];
    for (const e of entries) {
      const page = this.cutter.add(e);
      if (page) await this.page(page);
    }
  }

  /** The counted entries, given again by `replay`, into pages. */
  private async cutReplayed(): Promise<void> {
    const count = this.counted;
    const last = this.lastCounted!;
    this.counted = 0;
    this.lastCounted = undefined;
    let n = 0;
    let prev: TreeEntry | undefined;
    for await (const e of this.replay!()) {
      const page = this.cutter.add(e);
      if (page) await this.page(page);
      prev = e;
      if (++n === count) break;
    }
    // The caller's promise, checked where it is cheap: a wrong tree must never be written.
    if (n !== count || !prev!.name.equals(last.name)) throw new Error(`tree replay gave ${n} entries ending elsewhere than the ${count} held`);
  }

  /** Stores the pages held so far and every later one. */
  async stopHolding(): Promise<void> {
    if (!this.holding) return;
    await this.cutHeldEntries();
    this.holding = false;
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (const page of held) await this.store(page);
  }

  /** Stores the last page (and the index node of a paged directory); the tree's id. */
  async finish(): Promise<BlobId> {
    await this.cutHeldEntries();
    const last = this.cutter.finish();
    if (last) await this.page(last);
    await this.stopHolding();
    const ids = await Promise.all(this.pages.map((p) => p.id));
    if (ids.length === 1) return ids[0]!;
    const index = encodeIndex(this.pages.map((p, i) => ({ firstName: p.firstName, count: p.count, id: ids[i]! })));
    return (await this.writer.put(BlobType.Tree, index)).id;
  }

  /** Drops the held pages: the caller reuses an existing tree instead. */
  discard(): void {
    this.held = [];
    this.heldBytes = 0;
    this.heldEntries = [];
    this.counted = 0;
    this.lastCounted = undefined;
  }

  private async page(page: TreePage): Promise<void> {
    if (this.holding && this.heldBytes + page.bytes.length <= HOLD_LIMIT_BYTES) {
      this.held.push(page);
      this.heldBytes += page.bytes.length;
      return;
    }
    await this.stopHolding();
    await this.store(page);
  }

  private async store(page: TreePage): Promise<void> {
    // Pages being compressed are bounded too (the writer leaves that to its callers).
    if (this.pages.length >= PAGES_IN_FLIGHT) await this.pages[this.pages.length - PAGES_IN_FLIGHT]!.id;
    const id = this.writer.put(BlobType.Tree, page.bytes).then((r) => r.id);
    id.catch(() => undefined); // awaited in finish(); a failure is also kept by the writer
    this.pages.push({ firstName: page.firstName, count: page.count, id });
  }
}

/** Stores a whole directory given as sorted entries. Returns its tree id. */
export async function writeTree(writer: BlobWriter, entries: readonly TreeEntry[]): Promise<BlobId> {
  const tree = new TreeBuilder(writer);
  for (const e of entries) await tree.add(e);
  return tree.finish();
}
