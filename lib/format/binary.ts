// Minimal bounds-checked binary encoder/decoder shared by the on-disk formats.
// Decoders treat their input as hostile: every read is checked against the end of the
// buffer and every length against a limit, so damaged bytes give a CorruptDataError,
// never an exception from deep inside Node or an unbounded allocation.

import { CorruptDataError } from '../errors.js';

export class BinaryWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialSize = 4096) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  get length(): number {
    return this.pos;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    this.reserve(1);
    this.buf[this.pos++] = v;
    return this;
  }

  u16(v: number): this {
    this.reserve(2);
    this.buf.writeUInt16LE(v, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
    return this;
  }

  u64(v: bigint): this {
    this.reserve(8);
    this.buf.writeBigUInt64LE(v, this.pos);
    this.pos += 8;
    return this;
  }

  i64(v: bigint): this {
    this.reserve(8);
    this.buf.writeBigInt64LE(v, this.pos);
    this.pos += 8;
    return this;
  }

  /** Unsigned LEB128 for integers up to 2^53. */
  varint(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint out of range: ${v}`);
    this.reserve(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Length-prefixed byte string. */
  lbytes(b: Uint8Array): this {
    return this.varint(b.length).bytes(b);
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export class BinaryReader {
  pos: number;
  readonly end: number;
  /**
   * For 64-bit reads: DataView's are builtins that make one BigInt, where Buffer's
   * readBig*64LE are JavaScript doing several BigInt operations (slow before the JIT
   * warms up, and a tree holds three per entry).
   */
  private view: DataView | undefined;

  constructor(private readonly buf: Buffer, start = 0, end = buf.length, private readonly what = 'record') {
    this.pos = start;
    this.end = end;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number): void {
    if (n < 0 || this.pos + n > this.end) {
      throw new CorruptDataError(`${this.what}: truncated (need ${n} bytes at offset ${this.pos}, have ${this.end - this.pos})`);
    }
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): bigint {
    this.need(8);
    this.view ??= new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  i64(): bigint {
    this.need(8);
    this.view ??= new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    const v = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    return v;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      result += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (!Number.isSafeInteger(result)) break;
        return result;
      }
      scale *= 0x80;
    }
    throw new CorruptDataError(`${this.what}: malformed integer at offset ${this.pos}`);
  }

  /** A varint that must not exceed `max` (guards allocations driven by stored counts). */
  count(max: number, label: string): number {
    const n = this.varint();
    if (n > max) throw new CorruptDataError(`${this.what}: ${label} ${n} exceeds limit ${max}`);
    return n;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  lbytes(max: number, label: string): Buffer {
    return this.bytes(this.count(max, label));
  }

  expectEnd(): void {
    if (this.pos !== this.end) {
      throw new CorruptDataError(`${this.what}: ${this.end - this.pos} unexpected trailing bytes`);
    }
  }
}
