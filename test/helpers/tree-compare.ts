// Deep comparison of two directory trees, for asserting that a restore or a
// FUSE mount reproduces a source tree exactly. Returns readable differences
// rather than a boolean so a failing test says what went wrong.

import { constants as C, promises as fsp, type BigIntStats } from 'node:fs';
import { listXattrs } from '../../lib/platform/native.js';
import { joinRaw, showBytes, showPath } from './raw-path.js';

export type CompareAspect =
  | 'uid' | 'gid' | 'mode' | 'mtime' | 'xattrs' | 'hardlinks' | 'sparse' | 'dirMtime' | 'atime';

export interface CompareOptions {
  /**
   * Aspects not to compare. 'atime' is accepted but atime is never compared:
   * any reader of the expected tree (the backup under test, cp, readdir in
   * this very walk) moves it under relatime, so it cannot be checked reliably.
   */
  ignore?: CompareAspect[];
}

/** How much more space the actual copy of a file may allocate than the original. */
const SPARSE_SLACK_BYTES = 64n * 1024n;
const READ_CHUNK = 1024 * 1024;
const NS = 1_000_000_000n;

interface Entry {
  rel: Buffer;
  st: BigIntStats;
}

interface WalkResult {
  entries: Map<string, Entry>; // keyed by the latin1 rendering of the relative path: one char per byte
  errors: string[];
}

function display(rel: Buffer): string {
  return rel.length ? showPath(rel) : '"." (root)';
}

function typeName(st: BigIntStats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'char device';
  if (st.isBlockDevice()) return 'block device';
  if (st.isSocket()) return 'socket';
  return `unknown type 0o${(st.mode & BigInt(C.S_IFMT)).toString(8)}`;
}

function showTime(ns: bigint): string {
  const sign = ns < 0n ? '-' : '';
  const abs = ns < 0n ? -ns : ns;
  return `${sign}${abs / NS}.${(abs % NS).toString().padStart(9, '0')}`;
}

/** lstat every entry without following symlinks; read errors become differences. */
async function walk(root: string, side: string): Promise<WalkResult> {
  const entries = new Map<string, Entry>();
  const errors: string[] = [];
  const rootBuf = Buffer.from(root);
  async function visit(rel: Buffer): Promise<void> {
    const abs = rel.length ? joinRaw(rootBuf, rel) : rootBuf;
    let st: BigIntStats;
    try {
      st = await fsp.lstat(abs, { bigint: true });
    } catch (e) {
      errors.push(`${display(rel)}: cannot lstat in ${side}: ${(e as Error).message}`);
      return;
    }
    entries.set(rel.toString('latin1'), { rel, st });
    if (!st.isDirectory()) return;
    let names: Buffer[];
    try {
      names = await fsp.readdir(abs, { encoding: 'buffer' });
    } catch (e) {
      errors.push(`${display(rel)}: cannot list directory in ${side}: ${(e as Error).message}`);
      return;
    }
    for (const name of names) await visit(rel.length ? joinRaw(rel, name) : name);
  }
  await visit(Buffer.alloc(0));
  return { entries, errors };
}

/** Reads until `buf` is full or EOF; FUSE may return short reads. */
async function readFull(fh: fsp.FileHandle, buf: Buffer, pos: number): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** Opens without updating atime where allowed, so comparing doesn't alter the trees. */
async function openQuietly(path: Buffer): Promise<fsp.FileHandle> {
  const noatime = C.O_NOATIME ?? 0;
  try {
    return await fsp.open(path, C.O_RDONLY | noatime);
  } catch (e) {
    if (noatime && (e as NodeJS.ErrnoException).code === 'EPERM') return fsp.open(path, C.O_RDONLY);
    throw e;
  }
}

/** Streams both files in 1 MiB chunks; returns the first differing offset or -1. */
async function firstContentDifference(a: Buffer, b: Buffer): Promise<number> {
  const [fa, fb] = await Promise.all([openQuietly(a), openQuietly(b)]);
  try {
    const ba = Buffer.allocUnsafe(READ_CHUNK);
    const bb = Buffer.allocUnsafe(READ_CHUNK);
    for (let pos = 0; ; pos += READ_CHUNK) {
      const [na, nb] = await Promise.all([readFull(fa, ba, pos), readFull(fb, bb, pos)]);
      const n = Math.min(na, nb);
      if (!ba.subarray(0, n).equals(bb.subarray(0, n))) {
        let i = 0;
        while (ba[i] === bb[i]) i++;
        return pos + i;
      }
      if (na !== nb) return pos + n;
      if (na < READ_CHUNK) return -1;
    }
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

type XattrResult = { ok: true; attrs: Array<[Buffer, Buffer]> } | { ok: false; error: string };

function readXattrs(path: Buffer): XattrResult {
  try {
    const attrs = listXattrs(path).slice().sort((x, y) => Buffer.compare(x[0], y[0]));
    return { ok: true, attrs };
  } catch (e) {
    // A filesystem without xattr support simply has none.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTSUP' || code === 'EOPNOTSUPP') return { ok: true, attrs: [] };
    return { ok: false, error: (e as Error).message };
  }
}

function compareXattrs(rel: Buffer, expected: Buffer, actual: Buffer, out: string[]): void {
  const e = readXattrs(expected);
  const a = readXattrs(actual);
  if (!e.ok || !a.ok) {
    out.push(`${display(rel)}: cannot list xattrs: ${!e.ok ? `expected: ${e.error}` : ''} ${!a.ok ? `actual: ${a.error}` : ''}`.trim());
    return;
  }
  const am = new Map(a.attrs.map(([n, v]) => [n.toString('latin1'), v]));
  const em = new Map(e.attrs.map(([n, v]) => [n.toString('latin1'), v]));
  for (const [name, value] of e.attrs) {
    const other = am.get(name.toString('latin1'));
    if (other === undefined) out.push(`${display(rel)}: xattr ${showPath(name)} missing in actual`);
    else if (!other.equals(value)) {
      out.push(`${display(rel)}: xattr ${showPath(name)} expected ${showBytes(value)}, actual ${showBytes(other)}`);
    }
  }
  for (const [name] of a.attrs) {
    if (!em.has(name.toString('latin1'))) out.push(`${display(rel)}: xattr ${showPath(name)} unexpected in actual`);
  }
}

/**
 * For every non-directory path, the set of paths sharing its inode, restricted
 * to paths present on both sides (a missing path is reported once, as missing,
 * not again as a broken link).
 */
function linkGroups(entries: Map<string, Entry>, common: Set<string>): Map<string, string[]> {
  const byInode = new Map<string, string[]>();
  for (const [key, { st }] of entries) {
    if (st.isDirectory() || !common.has(key)) continue;
    const inode = `${st.dev}:${st.ino}`;
    const group = byInode.get(inode);
    if (group) group.push(key);
    else byInode.set(inode, [key]);
  }
  const groupOf = new Map<string, string[]>();
  for (const group of byInode.values()) {
    group.sort();
    for (const key of group) groupOf.set(key, group);
  }
  return groupOf;
}

function showGroup(keys: string[]): string {
  return '{' + keys.map((k) => display(Buffer.from(k, 'latin1'))).join(', ') + '}';
}

/**
 * Lists every difference between two trees; an empty list means identical in
 * all compared aspects. Paths in messages are relative and quoted, with
 * non-printable bytes shown as \xNN.
 */
export async function compareTrees(expected: string, actual: string, opts: CompareOptions = {}): Promise<string[]> {
  const ignore = new Set(opts.ignore ?? []);
  const [exp, act] = await Promise.all([walk(expected, 'expected'), walk(actual, 'actual')]);
  const diffs = [...exp.errors, ...act.errors];
  const expRoot = Buffer.from(expected);
  const actRoot = Buffer.from(actual);

  const keys = [...new Set([...exp.entries.keys(), ...act.entries.keys()])].sort();
  const common = new Set(keys.filter((k) => exp.entries.has(k) && act.entries.has(k)));
  // Inside a directory missing on one side, only the directory itself is reported.
  const suppressed = new Set<string>();
  const parentOf = (k: string) => (k.includes('/') ? k.slice(0, k.lastIndexOf('/')) : '');

  for (const key of keys) {
    const e = exp.entries.get(key);
    const a = act.entries.get(key);
    if (key !== '' && suppressed.has(parentOf(key))) {
      suppressed.add(key);
      continue;
    }
    if (!e || !a) {
      const only = (e ?? a)!;
      const inside = only.st.isDirectory()
        ? keys.filter((k) => k.startsWith(key + '/') && !(e ? act : exp).entries.has(k)).length
        : 0;
      const extra = inside ? ` containing ${inside} entries` : '';
      diffs.push(`${display(only.rel)}: ${e ? 'missing in actual' : 'unexpected in actual'} (${typeName(only.st)}${extra})`);
      suppressed.add(key);
      continue;
    }
    const rel = e.rel;
    const where = display(rel);
    const es = e.st;
    const as = a.st;
    if ((es.mode & BigInt(C.S_IFMT)) !== (as.mode & BigInt(C.S_IFMT))) {
      diffs.push(`${where}: type expected ${typeName(es)}, actual ${typeName(as)}`);
      continue;
    }
    const perm = (m: bigint) => (m & 0o7777n).toString(8).padStart(4, '0');
    if (!ignore.has('mode') && perm(es.mode) !== perm(as.mode)) {
      diffs.push(`${where}: mode expected ${perm(es.mode)}, actual ${perm(as.mode)}`);
    }
    if (!ignore.has('uid') && es.uid !== as.uid) diffs.push(`${where}: uid expected ${es.uid}, actual ${as.uid}`);
    if (!ignore.has('gid') && es.gid !== as.gid) diffs.push(`${where}: gid expected ${es.gid}, actual ${as.gid}`);
    const skipMtime = ignore.has('mtime') || (es.isDirectory() && ignore.has('dirMtime'));
    if (!skipMtime && es.mtimeNs !== as.mtimeNs) {
      diffs.push(`${where}: mtime expected ${showTime(es.mtimeNs)}, actual ${showTime(as.mtimeNs)}`);
    }
    const expPath = rel.length ? joinRaw(expRoot, rel) : expRoot;
    const actPath = rel.length ? joinRaw(actRoot, rel) : actRoot;

    if (es.isSymbolicLink()) {
      const [te, ta] = await Promise.all([
        fsp.readlink(expPath, { encoding: 'buffer' }),
        fsp.readlink(actPath, { encoding: 'buffer' }),
      ]);
      if (!te.equals(ta)) diffs.push(`${where}: symlink target expected ${showBytes(te)}, actual ${showBytes(ta)}`);
    }
    if ((es.isCharacterDevice() || es.isBlockDevice()) && es.rdev !== as.rdev) {
      diffs.push(`${where}: rdev expected ${es.rdev}, actual ${as.rdev}`);
    }
    if (es.isFile()) {
      if (es.size !== as.size) {
        diffs.push(`${where}: size expected ${es.size}, actual ${as.size}`);
      } else {
        const at = await firstContentDifference(expPath, actPath);
        if (at >= 0) diffs.push(`${where}: content differs from byte offset ${at}`);
      }
      const ea = es.blocks * 512n;
      const aa = as.blocks * 512n;
      if (!ignore.has('sparse') && aa > ea + SPARSE_SLACK_BYTES) {
        diffs.push(`${where}: allocates ${aa} bytes, expected at most ${ea} + ${SPARSE_SLACK_BYTES} slack (holes filled?)`);
      }
    }
    if (!ignore.has('xattrs')) compareXattrs(rel, expPath, actPath, diffs);
  }

  if (!ignore.has('hardlinks')) {
    const eg = linkGroups(exp.entries, common);
    const ag = linkGroups(act.entries, common);
    // One message per tangle: every path named in a message is not reported again.
    const reported = new Set<string>();
    for (const key of [...eg.keys()].sort()) {
      const g1 = eg.get(key)!;
      const g2 = ag.get(key);
      if (!g2 || reported.has(key) || g1.join('\0') === g2.join('\0')) continue;
      diffs.push(`hard links differ: ${display(Buffer.from(key, 'latin1'))} is linked with ${showGroup(g1)} in expected but ${showGroup(g2)} in actual`);
      for (const k of [...g1, ...g2]) reported.add(k);
    }
  }
  return diffs;
}

/** Max differences printed by assertTreesEqual; the rest are counted. */
const MAX_SHOWN = 50;

/**
 * Tap assertion: passes when compareTrees finds nothing. Takes the tap Test
 * as `any` so helpers don't depend on tap's generated types. Returns the full
 * list of differences for further inspection.
 */
export async function assertTreesEqual(
  t: any,
  expected: string,
  actual: string,
  opts?: CompareOptions,
  message = 'trees are identical',
): Promise<string[]> {
  const diffs = await compareTrees(expected, actual, opts);
  const shown = diffs.length > MAX_SHOWN
    ? [...diffs.slice(0, MAX_SHOWN), `... and ${diffs.length - MAX_SHOWN} more differences`]
    : diffs;
  t.same(shown, [], message);
  return diffs;
}
