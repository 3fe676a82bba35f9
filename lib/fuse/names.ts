// File names through fuse-native. fuse-native hands names to JavaScript as strings and
// takes them back as strings, converting with UTF-8 both ways, so bytes that are not
// valid UTF-8 cannot pass unchanged. Such a byte b (always 0x80-0xFF) is shown as the
// private-use character U+F700+b (U+F780-U+F7FF); a lookup of that spelling finds the
// stored name again. A name that is valid UTF-8 is shown exactly. docs/mount.md
// describes this; a binding of our own that passes bytes will make it unnecessary.

const ESC_BASE = 0xf700;

/** Length of the valid UTF-8 sequence starting at i, or 0 when the byte there starts none. */
function sequenceLength(b: Buffer, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  let len: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) len = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c === 0xe0) lo = 0xa0; // overlong
    if (c === 0xed) hi = 0x9f; // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c === 0xf0) lo = 0x90; // overlong
    if (c === 0xf4) hi = 0x8f; // above U+10FFFF
  } else return 0;
  if (i + len > b.length) return 0;
  const second = b[i + 1]!;
  if (second < lo || second > hi) return 0;
  for (let k = 2; k < len; k++) if ((b[i + k]! & 0xc0) !== 0x80) return 0;
  return len;
}

/** The string fuse-native should show for a stored name (or symlink target, xattr name). */
export function toFuseName(name: Buffer): string {
  let i = 0;
  let out = '';
  let run = 0;
  let escaped = false;
  while (i < name.length) {
    const len = sequenceLength(name, i);
    if (len > 0) {
      i += len;
      continue;
    }
    out += name.toString('utf8', run, i) + String.fromCharCode(ESC_BASE + name[i]!);
    escaped = true;
    i++;
    run = i;
  }
  return escaped ? out + name.toString('utf8', run) : name.toString('utf8');
}

/**
 * The stored names a name string from the kernel may stand for: its UTF-8 bytes first,
 * then, when it contains escape characters, the bytes they stand for.
 */
export function fromFuseName(s: string): Buffer[] {
  const literal = Buffer.from(s, 'utf8');
  let hasEscape = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= ESC_BASE + 0x80 && c <= ESC_BASE + 0xff) {
      hasEscape = true;
      break;
    }
  }
  if (!hasEscape) return [literal];
  const parts: Buffer[] = [];
  let run = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= ESC_BASE + 0x80 && c <= ESC_BASE + 0xff) {
      parts.push(Buffer.from(s.slice(run, i), 'utf8'), Buffer.from([c - ESC_BASE]));
      run = i + 1;
    }
  }
  parts.push(Buffer.from(s.slice(run), 'utf8'));
  return [literal, Buffer.concat(parts)];
}
