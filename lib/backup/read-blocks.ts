// The blocks large files are read into: fixed-size, in shared memory (the compression
// workers read the chunks cut from them without a copy), and reused. A fresh 8 MiB block
// per read leaves the allocator's heap fragmented and the garbage collector tens of MiB
// behind, which showed as ~100 MiB more peak RSS; a block in use is counted against the
// budget, and a few idle ones are kept for the next reads.

import { ByteBudget } from '../util/byte-budget.js';

export class ReadBlocks {
  private readonly idle: Buffer[] = [];

  constructor(
    readonly blockBytes: number,
    private readonly budget: ByteBudget,
    private readonly keepIdle: number,
  ) {
    if (blockBytes > budget.capacity) throw new RangeError('read blocks larger than the budget');
  }

  /** A block for this caller alone until `give`; waits for room in the budget. */
  async take(): Promise<Buffer> {
    await this.budget.acquire(this.blockBytes);
    return this.idle.pop() ?? Buffer.from(new SharedArrayBuffer(this.blockBytes));
  }

  /** Returns a block taken with `take`; nothing may use it, or views of it, afterwards. */
  give(block: Buffer): void {
    if (this.idle.length < this.keepIdle) this.idle.push(block);
    this.budget.release(this.blockBytes);
  }
}
