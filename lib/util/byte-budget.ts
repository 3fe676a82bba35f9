// A bound on the bytes of file data held in memory at once. Readers reserve before they
// read and release once what they read is stored (compressed and in a pack), so memory
// stays the same whatever the size of the tree: reading waits for compression instead of
// running ahead of it. Waiters are served in order, so a large reservation is not starved
// by a stream of small ones.

export class ByteBudget {
  private used = 0;
  private readonly waiting: Array<{ bytes: number; resolve: () => void }> = [];

  constructor(readonly capacity: number) {
    if (!(capacity > 0)) throw new RangeError(`byte budget must be positive, got ${capacity}`);
  }

  /** Bytes reserved now (for tests and diagnostics). */
  get reserved(): number {
    return this.used;
  }

  /**
   * Reserves `bytes`, waiting until they fit. A request above the capacity is cut to it
   * (it then waits for everything else). Returns the amount to pass to `release`.
   */
  async acquire(bytes: number): Promise<number> {
    const want = Math.min(Math.max(0, bytes), this.capacity);
    if (this.waiting.length === 0 && this.used + want <= this.capacity) {
      this.used += want;
      return want;
    }
    await new Promise<void>((resolve) => this.waiting.push({ bytes: want, resolve }));
    return want;
  }

  release(bytes: number): void {
    this.used -= bytes;
    while (this.waiting.length > 0 && this.used + this.waiting[0]!.bytes <= this.capacity) {
      const w = this.waiting.shift()!;
      this.used += w.bytes;
      w.resolve();
    }
  }
}
