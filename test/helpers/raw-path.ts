// Paths as raw bytes. Test trees contain names that are not valid UTF-8, so
// anything that walks or builds them must stay in Buffers end to end: a single
// round trip through a JS string would silently replace bytes with U+FFFD.

export type RawPath = string | Buffer;

export function toBuf(p: RawPath): Buffer {
  return typeof p === 'string' ? Buffer.from(p) : p;
}

/** Join path components with '/', keeping every byte as given. */
export function joinRaw(...parts: RawPath[]): Buffer {
  const out: Buffer[] = [];
  parts.forEach((part, i) => {
    if (i > 0) out.push(Buffer.from('/'));
    out.push(toBuf(part));
  });
  return Buffer.concat(out);
}

/**
 * Printable, unambiguous rendering of a byte path for test messages:
 * printable ASCII is kept, everything else becomes \xNN, and the whole thing
 * is quoted, so a name with a newline or 0xff byte still reads on one line.
 */
export function showPath(p: RawPath): string {
  const b = toBuf(p);
  let s = '"';
  for (const byte of b) {
    if (byte === 0x22 || byte === 0x5c) s += '\\' + String.fromCharCode(byte);
    else if (byte >= 0x20 && byte <= 0x7e) s += String.fromCharCode(byte);
    else s += '\\x' + byte.toString(16).padStart(2, '0');
  }
  return s + '"';
}

/** Same rendering, for byte values such as xattr values or link targets. */
export function showBytes(b: Buffer, max = 64): string {
  const shown = showPath(b.subarray(0, max));
  return b.length > max ? `${shown}... (${b.length} bytes)` : shown;
}

/** 32-bit FNV-1a: a cheap, stable hash to derive per-path test values. */
export function fnv1a(p: RawPath): number {
  let h = 0x811c9dc5;
  for (const byte of toBuf(p)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}
