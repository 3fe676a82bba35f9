// The no-change fast path: an unchanged file is recognised straight from its scan record
// (ScanCursor) and its parent entry reused. A wrong "unchanged" would silently keep stale
// content, so every field of the rule is checked to make a difference, exactly (64-bit
// inodes, nanosecond times), and changes the fast path must catch are made for real.
import t from 'tap';
import { promises as fs, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ScanCursor, decodeScan, scanDir, utimensNoFollow } from '../lib/platform/native.js';
import { unchangedScannedFile } from '../lib/backup/backup.js';
import { EntryKind, TreeEntry } from '../lib/format/tree.js';
import { Repository } from '../lib/store/repository.js';
import { BlobType } from '../lib/format/pack.js';
import { runSnapfs, tmpDir } from './helpers/cli.js';
import { assertTreesEqual } from './helpers/tree-compare.js';

/** The file entry a backup would have stored for a scanned file. */
function entryOf(st: ReturnType<ScanCursor['entry']>): TreeEntry {
  return {
    name: st.name, kind: EntryKind.File, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.size,
    allocated: st.blocks * 512, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, inode: st.ino, device: st.dev,
    nlink: st.nlink, rdev: st.rdev, since: 1, content: Buffer.from([0]),
  };
}

/** A cursor on the record named `name` of a scan buffer. */
function cursorAt(buf: Buffer, name: string): ScanCursor {
  const c = new ScanCursor(buf);
  while (c.next()) if (c.compareName(Buffer.from(name)) === 0) return c;
  throw new Error(`${name} not scanned`);
}

t.test('ScanCursor reads what decodeScan decodes', async (t) => {
  const dir = await tmpDir(t, 'nochange-cursor');
  for (const n of ['a', 'b b', 'c'.repeat(200)]) await fs.writeFile(path.join(dir, n), n);
  await fs.mkdir(path.join(dir, 'sub'));
  await fs.symlink('a', path.join(dir, 'link'));
  const buf = await scanDir(dir);
  const all = decodeScan(buf);
  const c = new ScanCursor(buf);
  let i = 0;
  while (c.next()) {
    const e = all[i++]!;
    t.same(c.entry(), e, e.name.toString());
    t.equal(c.compareName(e.name), 0);
    t.equal(c.mode, e.mode);
    t.equal(c.size, e.size);
    t.equal(c.dev, e.dev);
    t.equal(c.errno, e.errno);
    t.ok(c.inoIs(e.ino) && c.mtimeIs(e.mtimeNs) && c.ctimeIs(e.ctimeNs));
    t.notOk(c.inoIs(e.ino + 1n) || c.mtimeIs(e.mtimeNs + 1n) || c.ctimeIs(e.ctimeNs - 1n));
  }
  t.equal(i, all.length);
  t.throws(() => decodeScan(buf.subarray(0, buf.length - 1)), RangeError, 'a truncated record is refused');
});

t.test('the fast unchanged-file rule: every field counts, exactly', async (t) => {
  const dir = await tmpDir(t, 'nochange-rule');
  await fs.writeFile(path.join(dir, 'f'), 'content');
  await fs.mkdir(path.join(dir, 'd'));
  await fs.symlink('f', path.join(dir, 'l'));
  const buf = await scanDir(dir);
  const c = cursorAt(buf, 'f');
  const same = entryOf(c.entry());
  t.ok(unchangedScannedFile(c, same), 'identical: unchanged');
  const variants: Array<[string, Partial<TreeEntry>]> = [
    ['size', { size: same.size + 1 }],
    ['mtime (1 ns)', { mtimeNs: same.mtimeNs + 1n }],
    ['mtime (1 s)', { mtimeNs: same.mtimeNs - 1_000_000_000n }],
    ['ctime (1 ns)', { ctimeNs: same.ctimeNs - 1n }],
    ['inode', { inode: same.inode + 1n }],
    ['inode (high bits)', { inode: same.inode + (1n << 60n) }],
    ['device', { device: same.device + 1 }],
    ['kind: was a symlink', { kind: EntryKind.Symlink }],
    ['kind: was a directory', { kind: EntryKind.Directory }],
  ];
  for (const [what, change] of variants) t.notOk(unchangedScannedFile(c, { ...same, ...change }), `${what} differs: changed`);
  // Not regular files now, whatever the parent says.
  for (const n of ['d', 'l']) {
    const other = cursorAt(buf, n);
    t.notOk(unchangedScannedFile(other, { ...entryOf(other.entry()), kind: EntryKind.File }), `${n} is not a regular file`);
  }
  // 64-bit inodes and times compared exactly, beyond what a double holds (record layout:
  // mode, uid, gid, nlink (u32 each), ino (u64) at +16, ..., mtime (i64 s, u32 ns) at +68).
  const big = Buffer.from(buf);
  const b = cursorAt(big, 'f');
  big.writeBigUInt64LE((1n << 53n) + 1n, b.nameEnd + 16);
  t.ok(b.inoIs((1n << 53n) + 1n), 'inode 2^53 + 1 equals itself');
  t.notOk(b.inoIs(1n << 53n), 'inode 2^53 + 1 is not 2^53 (the same double)');
  t.notOk(b.inoIs((1n << 53n) + 2n));
  big.writeBigUInt64LE(0xffff_ffff_ffff_fff0n, b.nameEnd + 16);
  t.ok(b.inoIs(0xffff_ffff_ffff_fff0n));
  t.notOk(b.inoIs(0xffff_ffff_ffff_fff1n));
  t.notOk(b.inoIs(1n), 'a huge inode is not a small one');
  const mtime = b.entry().mtimeNs;
  t.notOk(b.mtimeIs(mtime + 1n) || b.mtimeIs(mtime - 1n), 'a nanosecond apart');
  big.writeInt32LE(-1, b.nameEnd + 68 + 4); // a negative time (before 1970)
  t.ok(b.mtimeIs(b.entry().mtimeNs));
  t.ok(b.entry().mtimeNs < 0n);
  // A failed lstat is never unchanged.
  const failed = Buffer.from(buf);
  const e = cursorAt(failed, 'f');
  failed.writeInt32LE(13, e.nameEnd + 92);
  t.notOk(unchangedScannedFile(e, same), 'lstat errno set: not unchanged');
});

/** utimensat with both times to the nanosecond. */
function setTimesNs(file: string, atimeNs: bigint, mtimeNs: bigint): void {
  const NS = 1_000_000_000n;
  utimensNoFollow(file, Number(atimeNs / NS), Number(atimeNs % NS), Number(mtimeNs / NS), Number(mtimeNs % NS));
}

async function backupJson(repo: string, src: string): Promise<any> {
  return (await runSnapfs(['backup', repo, src, '--source', 's', '--json'])).json.snapshot;
}

t.test('files changed behind the size and mtime are read again', async (t) => {
  const work = await tmpDir(t, 'nochange-real');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(path.join(src, 'sub'), { recursive: true });
  const names = ['same-size', 'replaced', 'chmod', 'untouched', 'sub/deep'];
  for (const n of names) await fs.writeFile(path.join(src, n), `original ${n}\n`);
  await runSnapfs(['init', repo]);
  const first = await backupJson(repo, src);
  t.equal(first.stats.filesOpened, names.length);
  const noChange = await backupJson(repo, src);
  t.equal(noChange.stats.filesOpened, 0, 'nothing changed: nothing opened');
  t.equal(noChange.root, first.root, 'and the same tree');

  // Same size, mtime put back: only the ctime tells.
  const keepMtime = async (file: string, change: () => Promise<void>): Promise<void> => {
    const before = await fs.stat(file, { bigint: true });
    await change();
    setTimesNs(file, before.atimeNs, before.mtimeNs);
    const after = await fs.stat(file, { bigint: true });
    t.equal(after.size, before.size);
    t.equal(after.mtimeNs, before.mtimeNs, `${path.basename(file)}: mtime put back`);
  };
  await keepMtime(path.join(src, 'same-size'), () => fs.writeFile(path.join(src, 'same-size'), 'CHANGED! same-size\n'));
  await keepMtime(path.join(src, 'sub/deep'), () => fs.writeFile(path.join(src, 'sub/deep'), 'CHANGED! sub/deep\n'));
  // Another inode of the same size and mtime renamed over it.
  const old = await fs.stat(path.join(src, 'replaced'), { bigint: true });
  await fs.writeFile(path.join(work, 'new'), 'CHANGED! replaced\n');
  setTimesNs(path.join(work, 'new'), old.atimeNs, old.mtimeNs);
  await fs.rename(path.join(work, 'new'), path.join(src, 'replaced'));
  await fs.chmod(path.join(src, 'chmod'), 0o600);

  const second = await backupJson(repo, src);
  t.equal(second.stats.filesOpened, 4, 'the four changed files were opened');
  t.equal(second.stats.filesUnchanged, 1);
  for (const n of ['same-size', 'replaced', 'sub/deep']) {
    const cat = await runSnapfs(['cat', repo, `s@last:${n}`]);
    t.equal(cat.stdout, `CHANGED! ${n}\n`, `${n}: the new content is stored`);
  }
  const ls = await runSnapfs(['ls', repo, 's@last', '--json']);
  t.equal(ls.json.entries.find((e: any) => e.name === 'chmod').mode, 0o600, 'the new mode is stored');
});

t.test('several tree blobs read at once give what one by one gives', async (t) => {
  const work = await tmpDir(t, 'nochange-getmany');
  await Repository.init(work);
  const repo = await Repository.open(work);
  t.teardown(() => repo.close());
  const session = await repo.beginWrite('test');
  const ids: Buffer[] = [];
  try {
    for (let i = 0; i < 50; i++) {
      // Some compress, some do not.
      const raw = i % 2 ? Buffer.alloc(300 + i, i) : Buffer.from(Array.from({ length: 200 + i }, (_, k) => (k * 7919 + i * 104729) & 0xff));
      ids.push((await session.writer.put(BlobType.Tree, raw)).id);
    }
    await session.writer.flush();
  } finally {
    await session.close();
  }
  const missing = Buffer.alloc(16, 0xab);
  const wanted = [ids[3]!, missing, ...ids.slice(10, 40).reverse(), ids[3]!];
  const many = await Promise.allSettled(repo.blobs.getMany(wanted, BlobType.Tree));
  for (let i = 0; i < wanted.length; i++) {
    if (wanted[i] === missing) {
      t.equal(many[i]!.status, 'rejected');
      t.equal((many[i] as PromiseRejectedResult).reason.code, 'BLOB_NOT_FOUND', 'a missing blob is reported as get reports it');
      continue;
    }
    t.equal(many[i]!.status, 'fulfilled');
    t.same((many[i] as PromiseFulfilledResult<Buffer>).value, await repo.blobs.get(wanted[i]!, BlobType.Tree));
  }
  const wrongType = await Promise.allSettled(repo.blobs.getMany([ids[0]!], BlobType.Data));
  t.equal((wrongType[0] as PromiseRejectedResult).reason.code, 'CORRUPT_DATA', 'the type is checked');
});

t.test('a big directory changed past its first 4,096 entries: the unchanged ones are given again by the parent', async (t) => {
  // Past HOLD_ENTRIES the writer only counts the entries that are the parent's, and reads
  // them again from the parent tree when the directory turns out changed after all.
  const work = await tmpDir(t, 'nochange-replay');
  const src = path.join(work, 'src');
  const box = path.join(src, 'cur');
  const repo = path.join(work, 'repo');
  await fs.mkdir(box, { recursive: true });
  const n = 10_000;
  const name = (i: number): string => `${1700000000 + i}.M${i % 997}.host:2,S`;
  for (let i = 0; i < n; i++) writeFileSync(path.join(box, name(i)), `message ${i}\n${'x'.repeat(i % 40)}\n`);
  await runSnapfs(['init', repo]);
  const day1 = await backupJson(repo, src);
  const day2 = await backupJson(repo, src);
  t.equal(day2.root, day1.root, 'unchanged: the same tree');
  t.equal(day2.stats.blobsAdded, 0);

  const listing = async (): Promise<string[]> =>
    ((await runSnapfs(['ls', repo, 's@last:cur', '--json'])).json.entries as Array<{ name: string }>).map((e) => e.name);
  const cases: Array<[string, () => Promise<void>]> = [
    ['a file rewritten at 9,000', () => fs.writeFile(path.join(box, name(9000)), 'rewritten\n')],
    ['a file deleted at 8,000', () => fs.rm(path.join(box, name(8000)))],
    ['a file added at the end', () => fs.writeFile(path.join(box, 'zzz-new'), 'new\n')],
    ['the last file deleted', () => fs.rm(path.join(box, name(n - 1)))],
  ];
  for (const [what, change] of cases) {
    await change();
    const snap = await backupJson(repo, src);
    t.not(snap.root, day1.root, `${what}: a new tree`);
    // The replayed entries cut into the very pages the parent had: only the page with the
    // change, the index node and the directories above it are new.
    t.ok(snap.stats.blobsAdded <= 6, `${what}: a few blobs, not the folder (${snap.stats.blobsAdded})`);
    t.same(await listing(), (await fs.readdir(box)).sort(), `${what}: exactly the names in the folder`);
  }
  const out = path.join(work, 'out');
  await runSnapfs(['restore', repo, 's@last', out]);
  await assertTreesEqual(t, src, out);
});
