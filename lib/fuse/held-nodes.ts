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
//   snapshot directory the kernel holds goes. What
//   is in use stays (a walk's open directories, open files, working directories); what is
//   used again is looked up again, with the same node ids, inode numbers and attributes.

import { Vfs } from '../read/vfs.js';

export interface EntryInvalidator {
  invalidateEntry(parent: bigint, name: Uint8Array): boolean;
}

export interface HeldNodesOptions {
  /** Held nodes (Vfs.held.nodes) above which the kernel is asked to let go. */
  budgetNodes: number;
  /** How often the budget is checked. */
  everyMs?: number;
  /** The least time between two budget trims (the kernel may keep what is in use). */
  minGapMs?: number;
}

/** SNAPFS_HELD_NODES_BUDGET (nodes) overrides it; see docs/mount.md, "Nodes the kernel holds". */
export const HELD_NODES_BUDGET = 200_000;

export function heldNodesBudget(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.SNAPFS_HELD_NODES_BUDGET);
  return Number.isSafeInteger(v) && v > 0 ? v : HELD_NODES_BUDGET;
}

export class HeldNodesTrim {
  private readonly timer: NodeJS.Timeout;
  private lastTrimAt = 0;
  /** Trims asked for, for the log: forgotten snapshots, budget. */
  readonly counts = { forgotten: 0, overBudget: 0 };

  constructor(private readonly vfs: Vfs, private readonly kernel: EntryInvalidator, private readonly opts: HeldNodesOptions) {
    this.timer = setInterval(() => this.check(), opts.everyMs ?? 1000);
    this.timer.unref();
  }

  /** Snapshots were forgotten: their directories go now (the timer retries what was in use). */
  releaseForgotten(): void {
    for (const d of this.vfs.heldSnapshotDirs()) {
      if (d.gone && this.kernel.invalidateEntry(d.parent, d.name)) this.counts.forgotten++;
    }
  }

  private check(): void {
    const now = Date.now();
    if (now - this.lastTrimAt < (this.opts.minGapMs ?? 10_000)) return;
    const dirs = this.vfs.heldSnapshotDirs();
    const overBudget = this.vfs.held.nodes > this.opts.budgetNodes;
    if (!overBudget && !dirs.some((d) => d.gone)) return;
    this.lastTrimAt = now;
    for (const d of dirs) {
      if ((overBudget || d.gone) && this.kernel.invalidateEntry(d.parent, d.name)) {
        if (d.gone) this.counts.forgotten++;
        else this.counts.overBudget++;
      }
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
