// Content-defined chunking of a byte stream with FastCDC (the loop runs in native/).
// The caller reads into buffers the chunker hands out; complete chunks come back as views
// of them (not copies), and the tail that may still grow is carried to the front of the
// next buffer, the only copy made, so cut points do not depend on how the input was split
// into reads.

import { cdcCuts } from '../platform/native.js';
import { ChunkerParams } from '../format/config.js';

const EMPTY = Buffer.alloc(0);

export class Chunker {
  /** The uncut end of the last buffer (a view of it). */
  private tail: Buffer = EMPTY;

  constructor(
    private readonly gear: Buffer,
    private readonly params: Pick<ChunkerParams, 'minSize' | 'avgSize' | 'maxSize'>,
  ) {}

  /** Bytes the next buffer starts with. */
  get carried(): number {
    return this.tail.length;
  }

  /**
   * A buffer for the next read: the carried tail, then room for `room` bytes (read them at
   * offset `length - room`). Shared memory, so that the compression workers can read the
   * chunks cut from it without a copy.
   */
  nextBuffer(room: number): Buffer {
    const buf = Buffer.from(new SharedArrayBuffer(this.tail.length + room));
    this.tail.copy(buf, 0);
    this.tail = EMPTY;
    return buf;
  }

  /**
   * Cuts `buf[0, length)`, a buffer from nextBuffer; `eof` ends the stream (the tail becomes
   * the last chunk). Returns the complete chunks, views of `buf`.
   */
  cut(buf: Buffer, length: number, eof: boolean): Buffer[] {
    const { minSize, avgSize, maxSize } = this.params;
    const cuts = cdcCuts(buf, 0, length, eof, this.gear, minSize, avgSize, maxSize);
    const chunks: Buffer[] = [];
    let start = 0;
    for (const end of cuts) {
      chunks.push(buf.subarray(start, end));
      start = end;
    }
    this.tail = start < length ? buf.subarray(start, length) : EMPTY;
    return chunks;
  }
}
