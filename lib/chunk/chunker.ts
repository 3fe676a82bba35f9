// Content-defined chunking of a byte stream with FastCDC (the loop runs in native/).
// The caller pushes blocks as they are read; complete chunks come out, and the tail that
// may still grow is carried into the next block, so cut points do not depend on how
// the input was split into reads.

import { cdcCuts } from '../platform/native.js';
import { ChunkerParams } from '../format/config.js';

export class Chunker {
  private carry: Buffer = Buffer.alloc(0);

  constructor(
    private readonly gear: Buffer,
    private readonly params: Pick<ChunkerParams, 'minSize' | 'avgSize' | 'maxSize'>,
  ) {}

  /** Returns the complete chunks (copies) found so far; `eof` flushes the tail. */
  push(block: Buffer, eof: boolean): Buffer[] {
    const data = this.carry.length > 0 ? Buffer.concat([this.carry, block]) : block;
    const cuts = cdcCuts(data, 0, data.length, eof, this.gear, this.params.minSize, this.params.avgSize, this.params.maxSize);
    const chunks: Buffer[] = [];
    let start = 0;
    for (const end of cuts) {
      chunks.push(Buffer.from(data.subarray(start, end)));
      start = end;
    }
    this.carry = start < data.length ? Buffer.from(data.subarray(start)) : Buffer.alloc(0);
    return chunks;
  }
}
