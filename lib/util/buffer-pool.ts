// Reusable byte buffers, so that a steady stream of similar work (the mount decompressing
// chunk after chunk into a bounded cache) stops allocating. Each ArrayBuffer dropped is
// garbage V8 frees only at its next full collection, which it starts after ~64 MiB of such
// external memory: that garbage was most of the mount server's peak RSS.
//
// New buffers are rounded up to one of four sizes per power of two; a request takes the
// smallest free buffer of at least that size and at most twice it. Free buffers are bounded
// in bytes; the oldest go first, so what is kept follows the current mix of sizes.

const MIN_BYTES = 4096;

/** The capacity a new buffer for `n` bytes gets. */
export function poolCapacity(n: number): number {
  if (n <= MIN_BYTES) return MIN_BYTES;
  const eighth = 2 ** (Math.ceil(Math.log2(n)) - 3); // four sizes per doubling: 5/8, 6/8, 7/8, 8/8
  return Math.ceil(n / eighth) * eighth;
}

export class BufferPool {
  /** Oldest first. */
  private readonly free: ArrayBuffer[] = [];
  private freeBytes = 0;

  constructor(private readonly maxFreeBytes: number) {}

  /** `n` bytes of uninitialized memory: a view of a buffer (`.buffer`) of at least `n` bytes. */
  take(n: number): Buffer {
    const cap = poolCapacity(n);
    let best = -1;
    for (let i = this.free.length - 1; i >= 0; i--) {
      const len = this.free[i]!.byteLength;
      if (len >= cap && len <= 2 * cap && (best < 0 || len < this.free[best]!.byteLength)) best = i;
    }
    if (best < 0) return Buffer.allocUnsafeSlow(cap).subarray(0, n);
    const [ab] = this.free.splice(best, 1) as [ArrayBuffer];
    this.freeBytes -= ab.byteLength;
    return Buffer.from(ab, 0, n);
  }

  /** Gives back a buffer from take(). The caller must hold no view of it afterwards. */
  give(buf: Buffer): void {
    const ab = buf.buffer as ArrayBuffer;
    if (ab.byteLength > this.maxFreeBytes) return;
    this.free.push(ab);
    this.freeBytes += ab.byteLength;
    while (this.freeBytes > this.maxFreeBytes) this.freeBytes -= this.free.shift()!.byteLength;
  }
}
