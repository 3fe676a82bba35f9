// Generators for source trees used by backup/restore/mount tests.
//
// Everything is deterministic (seeded PRNG, mtimes derived from path bytes) so
// two runs produce byte-identical trees apart from inode numbers and ctimes.

import { constants as C, promises as fsp } from 'node:fs';
import { mknod, setXattr, utimensNoFollow } from '../../lib/platform/native.js';
import { fnv1a, joinRaw, toBuf, type RawPath } from './raw-path.js';

const MiB = 1024 * 1024;
const BLOCK = 8 * MiB;

export const isRoot = process.getuid?.() === 0;

/** glibc's makedev() encoding of a device number. */
export function makedev(major: number, minor: number): number {
  const M = BigInt(major);
  const m = BigInt(minor);
  return Number(((M & 0xfffn) << 8n) | ((M & ~0xfffn) << 32n) | (m & 0xffn) | ((m & ~0xffn) << 12n));
}

/**
 * xorshift32: tiny and fast enough to fill hundreds of MiB per second, so big
 * test files cost disk bandwidth rather than CPU. Not cryptographic, it only
 * has to defeat compression and produce distinct content per seed.
 */
export class XorShift32 {
  private state: number;
  constructor(seed: number) {
    // xorshift has a fixed point at 0; any other value works.
    this.state = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (this.state = x >>> 0);
  }
  fill(words: Uint32Array): void {
    let x = this.state;
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[i] = x;
    }
    this.state = x >>> 0;
  }
  bytes(n: number): Buffer {
    const words = new Uint32Array(Math.ceil(n / 4));
    this.fill(words);
    return Buffer.from(words.buffer, 0, n);
  }
}

/** Mixes a base seed with a path so every file gets its own stream. */
function seedFor(seed: number, p: RawPath): number {
  return (fnv1a(p) ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0;
}

/**
 * Writes `size` pseudo-random bytes in 8 MiB blocks so memory stays bounded
 * for 200+ MiB files. Block k is seeded with seed+k; with `repeatBlocks`, every
 * 4th block repeats block k-2 so the file contains data that dedups against
 * itself at a non-trivial offset.
 */
async function writeRandomFile(
  path: Buffer,
  size: number,
  seed: number,
  repeatBlocks = false,
): Promise<void> {
  const fh = await fsp.open(path, 'w');
  try {
    const words = new Uint32Array(Math.min(BLOCK, size + 3) >>> 2 || 1);
    for (let k = 0, pos = 0; pos < size; k++, pos += BLOCK) {
      const src = repeatBlocks && k % 4 === 3 ? k - 2 : k;
      new XorShift32(seed + src).fill(words);
      const len = Math.min(BLOCK, size - pos);
      await fh.write(new Uint8Array(words.buffer, 0, len), 0, len, pos);
    }
  } finally {
    await fh.close();
  }
}

/** Compressible prose-like text, deterministic for a seed. */
function makeText(bytes: number, seed: number): Buffer {
  const words = ['lorem', 'ipsum', 'dolor', 'sit', 'amet', 'backup', 'chunk', 'snapshot',
    'dedup', 'inode', 'extent', 'hole', 'fuse', 'mount', 'store', 'index', 'the', 'a', 'of'];
  const rng = new XorShift32(seed);
  const parts: string[] = [];
  let len = 0;
  let line = 0;
  while (len < bytes) {
    const w = words[rng.next() % words.length]!;
    const sep = ++line % 12 === 0 ? '.\n' : ' ';
    parts.push(w + sep);
    len += w.length + sep.length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

/** Compressible log-like lines: repetitive structure, varying numbers. */
function makeLog(bytes: number, seed: number): Buffer {
  const rng = new XorShift32(seed);
  const levels = ['INFO', 'DEBUG', 'WARN', 'ERROR'];
  const parts: string[] = [];
  let len = 0;
  for (let i = 0; len < bytes; i++) {
    const t = new Date(1_700_000_000_000 + i * 1037).toISOString();
    const l = `${t} ${levels[rng.next() % 4]} req=${rng.next() % 100000} path=/api/v1/items/${rng.next() % 500} took=${rng.next() % 900}ms\n`;
    parts.push(l);
    len += l.length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

/**
 * Deterministic timestamp for a path: spread over 2017-2020 with a full
 * nanosecond field, so any truncation to µs/ms/s shows up in comparisons.
 */
function stampFor(rel: Buffer): { sec: number; nsec: number } {
  const h = fnv1a(rel.length ? rel : '.');
  return {
    sec: 1_500_000_000 + (h % 100_000_000),
    nsec: (Math.imul(h, 2654435761) >>> 0) % 1_000_000_000,
  };
}

/** Timestamps chosen explicitly for edge cases, keyed by relative path. */
const SPECIAL_TIMES: Record<string, { sec: number; nsec: number }> = {
  'times/ns-zero': { sec: 1_600_000_000, nsec: 0 },
  'times/ns-max': { sec: 1_600_000_000, nsec: 999_999_999 },
  'times/after-2038': { sec: 2 ** 31 + 12345, nsec: 123_456_789 },
  'times/epoch': { sec: 0, nsec: 1 },
};

/**
 * Final pass over a finished tree, children before parents: set modes (so
 * chown, which clears setuid/setgid, has already happened) and then
 * timestamps, so no later creation inside a directory bumps its mtime.
 * Entries without an explicit mode get 0644/0755 so the umask doesn't leak in.
 */
async function applyModesAndTimes(root: Buffer, modes: Map<string, number>): Promise<void> {
  async function visit(rel: Buffer): Promise<void> {
    const abs = rel.length ? joinRaw(root, rel) : root;
    const st = await fsp.lstat(abs);
    if (st.isDirectory()) {
      const names = (await fsp.readdir(abs, { encoding: 'buffer' })).sort(Buffer.compare);
      for (const name of names) await visit(rel.length ? joinRaw(rel, name) : name);
    }
    const key = rel.toString('latin1');
    if (!st.isSymbolicLink()) {
      const mode = modes.get(key) ?? (st.isDirectory() ? 0o755 : 0o644);
      await fsp.chmod(abs, mode);
    }
    const m = SPECIAL_TIMES[key] ?? stampFor(rel);
    // atime differs from mtime so a tool that swaps or copies one into the other is caught.
    const a = stampFor(Buffer.concat([rel, Buffer.from('#atime')]));
    utimensNoFollow(abs, a.sec, a.nsec, m.sec, m.nsec);
  }
  await visit(Buffer.alloc(0));
}

/** Small helper that creates entries relative to a root and remembers modes. */
class TreeBuilder {
  readonly root: Buffer;
  readonly modes = new Map<string, number>();
  constructor(root: string) {
    this.root = Buffer.from(root);
  }
  abs(rel: RawPath): Buffer {
    return joinRaw(this.root, rel);
  }
  private mode(rel: RawPath, mode: number | undefined): void {
    if (mode !== undefined) this.modes.set(toBuf(rel).toString('latin1'), mode);
  }
  async dir(rel: RawPath, mode?: number): Promise<void> {
    await fsp.mkdir(this.abs(rel), { recursive: true });
    this.mode(rel, mode);
  }
  async file(rel: RawPath, data: Buffer | string, mode?: number): Promise<void> {
    await fsp.writeFile(this.abs(rel), data);
    this.mode(rel, mode);
  }
  async random(rel: RawPath, size: number, seed: number, mode?: number): Promise<void> {
    await writeRandomFile(this.abs(rel), size, seedFor(seed, rel));
    this.mode(rel, mode);
  }
  async symlink(rel: RawPath, target: RawPath): Promise<void> {
    await fsp.symlink(toBuf(target), this.abs(rel));
  }
  async link(existing: RawPath, rel: RawPath): Promise<void> {
    await fsp.link(this.abs(existing), this.abs(rel));
  }
  async node(rel: RawPath, type: number, perm: number, rdev = 0): Promise<void> {
    mknod(this.abs(rel), type | perm, rdev);
    this.mode(rel, perm);
  }
  /** No-op when not root: tests that need ownership run as root anyway. */
  async own(rel: RawPath, uid: number, gid: number): Promise<void> {
    if (isRoot) await fsp.lchown(this.abs(rel), uid, gid);
  }
  xattr(rel: RawPath, name: string, value: Buffer | string): void {
    setXattr(this.abs(rel), Buffer.from(name), toBuf(value));
  }
}

export interface FidelityOptions {
  /** Size of the big pseudo-random file; default 200 MiB. */
  bigFileBytes?: number;
  /** Chunker parameters: files are created at exactly these sizes and ±1. */
  chunk: { min: number; avg: number; max: number };
}

/**
 * Builds a tree exercising everything a faithful backup must preserve:
 * file sizes around chunk boundaries, sparse files, every file type, hard
 * links, odd byte names, special mode bits, ownership, ns timestamps, xattrs.
 * `root` is created if missing; it should be empty.
 */
export async function generateFidelityTree(root: string, opts: FidelityOptions): Promise<void> {
  const b = new TreeBuilder(root);
  const seed = 0x5eed;
  await b.dir('');

  // Regular files at sizes where chunkers have off-by-one bugs.
  await b.dir('sizes');
  await b.file('sizes/empty', '');
  await b.file('sizes/one-byte', 'x');
  for (const [label, n] of Object.entries(opts.chunk)) {
    await b.random(`sizes/${label}-minus-1`, n - 1, seed);
    await b.random(`sizes/${label}`, n, seed);
    await b.random(`sizes/${label}-plus-1`, n + 1, seed);
  }
  // Identical content under two names (not hard links): cross-file dedup.
  await b.dir('dups');
  const dupBytes = 2 * opts.chunk.max + 12345;
  await writeRandomFile(b.abs('dups/copy-a'), dupBytes, 42);
  await writeRandomFile(b.abs('dups/copy-b'), dupBytes, 42);

  await b.dir('big');
  await writeRandomFile(b.abs('big/random.bin'), opts.bigFileBytes ?? 200 * MiB, 7, true);

  await b.dir('text');
  await b.file('text/lorem.txt', makeText(256 * 1024 + 17, 1));
  await b.file('text/app.log', makeLog(MiB + 3, 2));
  // Explicit zeros, not a hole: compressible and a sparse-detection corner case.
  await b.file('text/zeros.bin', Buffer.alloc(MiB));

  // Sparse files. Data extents are 64 KiB so they stay block-aligned.
  await b.dir('sparse');
  {
    const fh = await fsp.open(b.abs('sparse/holes'), 'w');
    const data = new XorShift32(9).bytes(64 * 1024);
    await fh.write(data, 0, data.length, 0);
    await fh.write(data, 0, data.length, 64 * 1024 + 10 * MiB);
    await fh.truncate(2 * 64 * 1024 + 20 * MiB); // trailing 10 MiB hole
    await fh.close();
  }
  {
    const fh = await fsp.open(b.abs('sparse/leading-hole'), 'w');
    const data = new XorShift32(10).bytes(64 * 1024);
    await fh.write(data, 0, data.length, 4 * MiB);
    await fh.close();
  }
  {
    const fh = await fsp.open(b.abs('sparse/all-hole'), 'w');
    await fh.truncate(64 * MiB);
    await fh.close();
  }

  // Directories.
  await b.dir('empty');
  await b.dir('nested/a/b/c/d/e');
  await b.file('nested/a/b/c/d/e/deep.txt', 'deep\n');
  await b.file('nested/a/top.txt', 'top\n');
  await b.dir('nested/a/b/empty-leaf');

  // Symlinks. Absolute targets are outside the tree so the tree is the same
  // wherever it is generated.
  await b.dir('links');
  await b.symlink('links/relative', '../sizes/one-byte');
  await b.symlink('links/absolute', '/dev/null');
  await b.symlink('links/dangling', 'no/such/target');
  await b.symlink('links/to-dir', '../nested/a');
  await b.symlink('links/odd-target', Buffer.from([0x2e, 0x2e, 0x2f, 0xff, 0x0a, 0x80]));
  await b.own('links/relative', 1234, 5678);

  // Hard links: a group of three spanning two directories, and a pair.
  await b.dir('hardlinks/a');
  await b.dir('hardlinks/b');
  await b.random('hardlinks/a/three-1', 3000, seed);
  await b.link('hardlinks/a/three-1', 'hardlinks/a/three-2');
  await b.link('hardlinks/a/three-1', 'hardlinks/b/three-3');
  b.xattr('hardlinks/a/three-1', 'user.linked', 'yes');
  await b.own('hardlinks/a/three-1', 1000, 1000);
  await b.file('hardlinks/pair-1', 'pair\n');
  await b.link('hardlinks/pair-1', 'hardlinks/pair-2');

  // Special files.
  await b.dir('special');
  await b.node('special/fifo', C.S_IFIFO, 0o640);
  if (isRoot) await b.node('special/null', C.S_IFCHR, 0o666, makedev(1, 3));

  // Odd names, all as raw bytes.
  await b.dir('names');
  const names: Buffer[] = [
    Buffer.from([0x66, 0xff, 0xfe]), // not UTF-8
    Buffer.from('new\nline'),
    Buffer.from(`space "double" 'single'`),
    Buffer.from('-leading-dash'),
    Buffer.from('.hidden'),
    Buffer.from(' leading and trailing space '),
    Buffer.from('L'.repeat(250) + '.long'), // 255 bytes, the NAME_MAX limit
    Buffer.from('é'.repeat(127) + 'x'), // 255 bytes of multibyte UTF-8
  ];
  // Every byte value except NUL and '/', spread over names of <= 255 bytes.
  const allBytes = [...Array(255).keys()].map((i) => i + 1).filter((c) => c !== 0x2f);
  for (let i = 0; i < allBytes.length; i += 64) {
    names.push(Buffer.concat([Buffer.from(`bytes-${i / 64}-`), Buffer.from(allBytes.slice(i, i + 64))]));
  }
  for (const [i, name] of names.entries()) {
    await b.file(joinRaw('names', name), `odd name ${i}\n`);
  }
  const oddDir = joinRaw('names', Buffer.from([0x64, 0xe9])); // latin1 "dé"
  await b.dir(oddDir);
  await b.file(joinRaw(oddDir, Buffer.from([0x80, 0x81])), 'inside odd dir\n');

  // Modes. Applied in the final pass, after chown (which clears set-id bits).
  await b.dir('modes');
  await b.file('modes/0755', '#!/bin/sh\n', 0o755);
  await b.file('modes/0600', 'private\n', 0o600);
  await b.file('modes/0000', 'nobody\n', 0o000);
  await b.file('modes/04755-setuid', 'suid\n', 0o4755);
  await b.own('modes/04755-setuid', 1000, 1000);
  await b.file('modes/02755-setgid', 'sgid\n', 0o2755);
  await b.own('modes/02755-setgid', 1234, 5678);
  await b.dir('modes/01777-sticky-dir', 0o1777);
  await b.dir('modes/02775-setgid-dir', 0o2775);
  await b.dir('modes/0700-dir', 0o700);
  await b.file('modes/0700-dir/inside', 'x\n');

  // Ownership.
  await b.dir('owners');
  await b.file('owners/1000-1000', 'a\n');
  await b.own('owners/1000-1000', 1000, 1000);
  await b.file('owners/1234-5678', 'b\n');
  await b.own('owners/1234-5678', 1234, 5678);
  await b.file('owners/0-0', 'c\n');
  await b.own('owners/0-0', 0, 0);
  await b.dir('owners/dir-1234-5678');
  await b.own('owners/dir-1234-5678', 1234, 5678);
  await b.symlink('owners/link-1000-1000', '../owners/0-0');
  await b.own('owners/link-1000-1000', 1000, 1000);

  // Timestamps with edge-case values (see SPECIAL_TIMES).
  await b.dir('times');
  for (const name of Object.keys(SPECIAL_TIMES)) await b.file(name, name + '\n');
  await b.symlink('times/symlink', 'ns-max'); // symlink's own mtime via utimensNoFollow

  // Extended attributes on files and directories.
  await b.dir('xattrs/dir');
  await b.file('xattrs/file', 'has xattrs\n');
  b.xattr('xattrs/file', 'user.text', 'hello');
  b.xattr('xattrs/file', 'user.binary', Buffer.from([...Array(256).keys()]));
  b.xattr('xattrs/file', 'user.empty', Buffer.alloc(0));
  b.xattr('xattrs/file', 'user.café', 'unicode name');
  b.xattr('xattrs/file', 'user.large', new XorShift32(11).bytes(1024));
  b.xattr('xattrs/dir', 'user.on-dir', 'dir value');
  b.xattr('xattrs/dir', 'user.empty', Buffer.alloc(0));
  b.xattr(joinRaw('names', Buffer.from([0x66, 0xff, 0xfe])), 'user.odd-name', Buffer.from([0xff]));

  await applyModesAndTimes(b.root, b.modes);
}

export interface SmallTreeOptions {
  files: number;
  dirs: number;
  seed: number;
}

/**
 * Many small files (0-16 KiB) of deterministic content over `dirs` nested
 * directories; every 7th file repeats the previous file's content so dedup
 * has something to find. Returns the files' paths relative to root.
 */
export async function generateSmallTree(root: string, opts: SmallTreeOptions): Promise<string[]> {
  await fsp.mkdir(root, { recursive: true });
  // Directory i hangs under directory (i-1)/2: a binary tree of depth log2(dirs).
  const dirs: string[] = [];
  for (let i = 0; i < opts.dirs; i++) {
    const name = `d${String(i).padStart(3, '0')}`;
    dirs.push(i === 0 ? name : `${dirs[(i - 1) >> 1]}/${name}`);
    await fsp.mkdir(`${root}/${dirs[i]}`, { recursive: true });
  }
  const files: string[] = [];
  let prev: Buffer = Buffer.alloc(0);
  for (let j = 0; j < opts.files; j++) {
    const rel = `${dirs.length ? dirs[j % dirs.length] + '/' : ''}f${String(j).padStart(4, '0')}.dat`;
    const rng = new XorShift32(seedFor(opts.seed, rel));
    const data = j % 7 === 6 ? prev : rng.bytes(rng.next() % 16385);
    await fsp.writeFile(`${root}/${rel}`, data);
    files.push(rel);
    prev = data;
  }
  await applyModesAndTimes(Buffer.from(root), new Map());
  return files;
}

/**
 * Rewrites each file (path relative to root) with new content, keeping the
 * size for about half of them so size alone can't reveal the change, and sets
 * mtime to the old mtime + 1.000000001 s (deterministic, still a change).
 */
export async function mutateFiles(root: string, paths: RawPath[], seed: number): Promise<void> {
  for (const rel of paths) {
    const abs = joinRaw(root, rel);
    const st = await fsp.lstat(abs, { bigint: true });
    const s = seedFor(seed, rel);
    const keepSize = s % 2 === 0 && st.size > 0n;
    const size = keepSize ? Number(st.size) : Number(st.size) + 1 + (s % 4096);
    // Remember the old first byte so a same-size rewrite is guaranteed to differ.
    const first = Buffer.alloc(1);
    if (st.size > 0n) {
      const fh = await fsp.open(abs, 'r');
      await fh.read(first, 0, 1, 0);
      await fh.close();
    }
    await writeRandomFile(abs, size, s);
    const fh = await fsp.open(abs, 'r+');
    await fh.write(Buffer.from([first[0]! ^ 0xa5]), 0, 1, 0);
    await fh.close();
    const mtime = st.mtimeNs + 1_000_000_001n;
    utimensNoFollow(
      abs,
      Number(st.atimeNs / 1_000_000_000n), Number(st.atimeNs % 1_000_000_000n),
      Number(mtime / 1_000_000_000n), Number(mtime % 1_000_000_000n),
    );
  }
}
