// Keeps the nodes the kernel holds, and so the server's records of them, within bounds.
//
// The kernel keeps every name it has looked up (a dentry and its inode) until memory
// pressure makes it let go, and until it sends FORGET the server must keep a record for
// each node (lib/read/pin-table.ts, ~100 bytes). A tape job walks a whole new snapshot
// every night, so without help the server would grow by a snapshot's worth of records a
// night, and the records of forgotten snapshots would stay until the kernel's memory ran
// short. Two rules, through entry invalidations (FuseSession.invalidateEntry), which make
// the kernel drop a snapshot directory's unused names and forget their nodes:
// - a forgotten snapshot's directory goes at once;
// - when the records pass a budget (200,000 nodes: ~20-30 MiB with their paths), every
//   snapshot directory the kernel holds goes.
// What is in use stays (a walk's open directories, open files, working directories); what
// is used again is looked up again, with the same node ids, inode numbers and attributes.

import { Vfs } from '../read/vfs.js';

export interface EntryInvalidator {
  invalidateEntry(parent: bigint, name: Uint8Array): boolean;
}

/** SNAPFS_HELD_NODES_BUDGET (nodes) overrides it; see docs/mount.md, "Nodes the kernel holds". */
export const HELD_NODES_BUDGET = 200_000;
/** How often the budget is checked. */
const CHECK_EVERY_MS = 1000;
/** The least time between two trims: the kernel keeps what is in use, which may stay over the budget. */
const MIN_GAP_MS = 10_000;

export function heldNodesBudget(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.SNAPFS_HELD_NODES_BUDGET);
  return Number.isSafeInteger(v) && v > 0 ? v : HELD_NODES_BUDGET;
}

export class HeldNodesTrim {
  private readonly timer: NodeJS.Timeout;
  private lastTrimAt = 0;

  constructor(private readonly vfs: Vfs, private readonly kernel: EntryInvalidator, private readonly budgetNodes: number) {
    this.timer = setInterval(() => this.check(), CHECK_EVERY_MS);
    this.timer.unref();
  }

  /** Snapshots were forgotten: their directories go now (the timer retries what was in use). */
  releaseForgotten(): void {
    this.invalidate(false);
  }

  private check(): void {
    const now = Date.now();
    if (now - this.lastTrimAt < MIN_GAP_MS) return;
    const overBudget = this.vfs.held.nodes > this.budgetNodes;
    if (this.invalidate(overBudget)) this.lastTrimAt = now;
  }

  /** Invalidates the held snapshot directories that are gone, or all of them; whether any. */
  private invalidate(all: boolean): boolean {
    let any = false;
    for (const d of this.vfs.heldSnapshotDirs()) {
      if (all || d.gone) any = this.kernel.invalidateEntry(d.parent, d.name) || any;
    }
    return any;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
