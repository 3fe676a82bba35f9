// Content-defined chunking of a byte stream with FastCDC (the loop runs in native/).
// The caller reads into blocks of its own; complete chunks come back as views of them (not
// copies), and the tail that may still grow is carried to the front of the next block, so
// cut points do not depend on how the input was split into reads. The tail is copied out
// when it is cut (the caller may reuse a block as soon as its chunks are stored) and then
// into the next block: the only copies, of less than one chunk per block.

import { cdcCuts } from '../platform/native.js';
import { ChunkerParams } from '../format/config.js';

const EMPTY = Buffer.alloc(0);

export class Chunker {
  private carry: Buffer = EMPTY;

  constructor(
    private readonly gear: Buffer,
    private readonly params: Pick<ChunkerParams, 'minSize' | 'avgSize' | 'maxSize'>,
  ) {}

  /** Starts a block with the carried tail; returns the offset where the next read goes. */
  refill(block: Buffer): number {
    // The tail is shorter than a chunk's maximum size; blocks are at least twice that.
    if (block.length <= this.carry.length) throw new RangeError('chunker: block too small for the carried tail');
    const at = this.carry.copy(block, 0);
    this.carry = EMPTY;
    return at;
  }

  /**
   * Cuts `block[0, length)`, a block started with `refill`; `eof` ends the stream (the tail
   * becomes the last chunk). Returns the complete chunks, views of `block`.
   */
  cut(block: Buffer, length: number, eof: boolean): Buffer[] {
    const { minSize, avgSize, maxSize } = this.params;
    const cuts = cdcCuts(block, 0, length, eof, this.gear, minSize, avgSize, maxSize);
    const chunks: Buffer[] = [];
    let start = 0;
    for (const end of cuts) {
      chunks.push(block.subarray(start, end));
      start = end;
    }
    this.carry = start < length ? Buffer.from(block.subarray(start, length)) : EMPTY;
    return chunks;
  }
}
