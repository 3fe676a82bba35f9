// The listing cache (lib/backup/listing-cache.ts): a directory that lists exactly as when
// its previous tree was made keeps that tree, unread. It must be invisible: after each kind
// of change below, the backup that used it makes the very same tree (the same root id) as
// the full walk makes from the same repository with its listings table emptied, and that
// snapshot restores to the source. And it must be used: an unchanged tree lists as before,
// directory by directory, also after its files were merely read.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { lmdb } from '../lib/platform/lmdb.js';
import { setXattr, utimensNoFollow } from '../lib/platform/native.js';
import { runSnapfs, tmpDir } from './helpers/cli.js';
import { copyRepo } from './helpers/fault.js';
import { generateSmallTree } from './helpers/tree-gen.js';
import { assertTreesEqual } from './helpers/tree-compare.js';

/** lmdb-js on the repository's index: the listings table, written or emptied from outside. */
async function withListings(repo: string, fn: (table: any) => void): Promise<void> {
  const env = lmdb.open({ path: path.join(repo, 'index'), maxDbs: 4, compression: false } as any);
  try {
    const table = env.openDB({ name: 'listings', keyEncoding: 'binary', encoding: 'binary', compression: false } as any);
    env.transactionSync(() => fn(table));
  } finally {
    await env.close();
  }
}

async function directoryCount(root: string): Promise<number> {
  let n = 1;
  for (const e of await fs.readdir(root, { withFileTypes: true })) {
    if (e.isDirectory()) n += await directoryCount(path.join(root, e.name));
  }
  return n;
}

t.test('a backup that reuses listed trees makes what the full walk makes', async (t) => {
  const work = await tmpDir(t, 'listings');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const files = await generateSmallTree(src, { files: 240, dirs: 24, seed: 11 });
  await fs.mkdir(path.join(src, 'empty/deeper/still'), { recursive: true });
  await fs.symlink('d000/f0000.dat', path.join(src, 'link'));
  await fs.link(path.join(src, files[5]!), path.join(src, 'hard'));
  setXattr(path.join(src, files[9]!), 'user.note', Buffer.from('kept'));
  t.equal((await runSnapfs(['init', repo])).code, 0);
  const first = await runSnapfs(['backup', repo, src, '--source', 's', '--time', '2026-03-01T10:00:00Z', '--json']);
  t.equal(first.code, 0, first.stderr);
  t.equal(first.json.snapshot.stats.directoriesUnchanged, 0, 'nothing is known before the first backup');

  let day = 1;
  /** Backs up `src` with the listings and, in a copy, without: the same tree, restored exactly. */
  const step = async (label: string, extra: string[] = []): Promise<any> => {
    const time = `2026-03-${String(++day).padStart(2, '0')}T10:00:00Z`;
    const full = await copyRepo(repo, path.join(work, `full-${day}`));
    await withListings(full, (table) => table.clearSync());
    const args = (r: string) => ['backup', r, src, '--source', 's', '--time', time, '--json', ...extra];
    const cached = await runSnapfs(args(repo));
    const walked = await runSnapfs(args(full));
    t.equal(cached.code, 0, `${label}: ${cached.stderr}`);
    t.equal(walked.code, 0, `${label} (full walk): ${walked.stderr}`);
    t.equal(walked.json.snapshot.stats.directoriesUnchanged, 0, `${label}: the full walk knew no listing`);
    t.equal(cached.json.snapshot.root, walked.json.snapshot.root, `${label}: the same tree as the full walk`);
    const { directoriesUnchanged, ...rest } = cached.json.snapshot.stats;
    const { directoriesUnchanged: _, ...restWalked } = walked.json.snapshot.stats;
    for (const k of ['files', 'directories', 'otherEntries', 'filesNew', 'filesChanged', 'filesUnchanged', 'filesOpened', 'bytesTotal']) {
      t.equal(rest[k], restWalked[k], `${label}: stats.${k} as the full walk counts it`);
    }
    if (extra.length === 0) {
      const out = path.join(work, `out-${day}`);
      const restore = await runSnapfs(['restore', repo, 's@last', out]);
      t.equal(restore.code, 0, restore.stderr);
      await assertTreesEqual(t, src, out, {}, `${label}: restores to the source`);
      await fs.rm(out, { recursive: true, force: true });
    }
    await fs.rm(full, { recursive: true, force: true });
    return cached.json.snapshot;
  };

  const all = await directoryCount(src);
  let snap = await step('nothing changed');
  t.equal(snap.stats.directoriesUnchanged, all, 'every directory lists as before');
  t.equal(snap.stats.filesOpened, 0);

  // Files read list as before. Setting their atime back first (under relatime, a read then
  // moves it) changes their ctime: that is a change, seen as one.
  const read = files.slice(0, 40).map((f) => path.join(src, f));
  for (const f of read) {
    const st = await fs.lstat(f, { bigint: true });
    utimensNoFollow(f, 1_000_000_000, 7, Number(st.mtimeNs / 1_000_000_000n), Number(st.mtimeNs % 1_000_000_000n));
  }
  snap = await step('atimes set back');
  t.equal(snap.stats.filesOpened, 40, 'their ctime moved: read again');
  t.ok(snap.stats.directoriesUnchanged < all, 'their directories list otherwise');
  const atimes = async () => Promise.all(read.map(async (f) => (await fs.lstat(f, { bigint: true })).atimeNs));
  const atimesBefore = await atimes();
  for (const f of read) await fs.readFile(f);
  const moved = (await atimes()).filter((a, i) => a !== atimesBefore[i]).length;
  t.comment(`${moved} of ${read.length} atimes moved by reading`);
  snap = await step('files read');
  t.equal(snap.stats.directoriesUnchanged, all, 'a read does not change a listing');
  t.equal(snap.stats.filesOpened, 0);

  // A deep file rewritten at the same size with its mtime put back: only ctime tells.
  const deep = files.find((f) => f.split('/').length >= 4)!;
  const before = await fs.lstat(path.join(src, deep), { bigint: true });
  const content = await fs.readFile(path.join(src, deep));
  content[0] = content[0]! ^ 0xff;
  await fs.writeFile(path.join(src, deep), content);
  utimensNoFollow(path.join(src, deep), 0, 0, Number(before.mtimeNs / 1_000_000_000n), Number(before.mtimeNs % 1_000_000_000n));
  snap = await step('a deep file rewritten, size and mtime kept');
  t.equal(snap.stats.filesOpened, 1, 'exactly that file is read');
  t.equal(snap.stats.directoriesUnchanged, all - deep.split('/').length, 'every directory but its ancestors lists as before');

  await fs.chmod(path.join(src, path.dirname(deep)), 0o750);
  await step('a directory chmod');
  setXattr(path.join(src, files[100]!), 'user.added', Buffer.from('x'));
  await step('an xattr added');
  await fs.writeFile(path.join(src, 'empty/deeper/still/new'), 'new file');
  await fs.mkdir(path.join(src, files[200]!.replace(/[^/]*$/, 'newdir')));
  await step('a new file deep down and a new directory');
  await fs.rm(path.join(src, 'd000/d001/d003'), { recursive: true });
  await fs.rename(path.join(src, files[30]!), path.join(src, 'empty/moved.dat'));
  await step('a subtree removed and a file moved');
  await fs.rm(path.join(src, 'link'));
  await fs.symlink('d000/f0001.dat', path.join(src, 'link'));
  await fs.link(path.join(src, files[60]!), path.join(src, 'empty/deeper/hard2'));
  await step('a symlink retargeted and a hard link added');

  // New options: nothing listed before may stand for what they exclude.
  snap = await step('an exclusion added', ['--exclude', '*.dat']);
  t.equal(snap.stats.directoriesUnchanged, 0, 'listings remembered under other options are not used');
  const ls = await runSnapfs(['ls', repo, 's@last:d000', '--json']);
  t.same(ls.json.entries.filter((e: any) => e.name.endsWith('.dat')), [], 'the excluded files are not in the snapshot');
  await step('back without the exclusion');
  snap = await step('nothing changed after all that');
  t.equal(snap.stats.directoriesUnchanged, await directoryCount(src));

  // A damaged table: whatever does not verify is not known.
  const root = Buffer.from(snap.root, 'hex');
  await withListings(repo, (table) => {
    const v = table.getBinary(root) as Buffer;
    t.ok(v, 'the top directory is remembered');
    const bad = Buffer.from(v);
    bad[20] = bad[20]! ^ 1; // inside the fingerprint
    table.putSync(root, bad);
  });
  snap = await step('a damaged listing entry');
  t.equal(snap.stats.directoriesUnchanged, (await directoryCount(src)) - 1, 'the damaged entry is passed over; the rest are used');
});

t.test('prune forgets the listings of the trees it deletes, and only those', async (t) => {
  const work = await tmpDir(t, 'listings-prune');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const files = await generateSmallTree(src, { files: 60, dirs: 8, seed: 12 });
  t.equal((await runSnapfs(['init', repo])).code, 0);
  const backup = async (day: number) => {
    const r = await runSnapfs(['backup', repo, src, '--source', 's', '--time', `2026-04-0${day}T10:00:00Z`, '--json']);
    t.equal(r.code, 0, r.stderr);
    return r.json.snapshot;
  };
  const keys = async (): Promise<Set<string>> => {
    const out = new Set<string>();
    await withListings(repo, (table) => {
      for (const k of table.getKeys()) out.add((k as Buffer).toString('hex'));
    });
    return out;
  };
  const first = await backup(1);
  await fs.appendFile(path.join(src, files[7]!), 'changed');
  const second = await backup(2);
  t.not(second.root, first.root);
  const before = await keys();
  t.ok(before.has(first.root) && before.has(second.root), 'both tops are remembered');

  t.equal((await runSnapfs(['forget', repo, '--keep-last', '1'])).code, 0);
  const prune = await runSnapfs(['prune', repo, '--json']);
  t.equal(prune.code, 0, prune.stderr);
  t.same(prune.json.warnings, []);
  const after = await keys();
  t.notOk(after.has(first.root), 'the deleted top is forgotten');
  t.ok(after.has(second.root), 'the kept one is not');
  t.ok(after.size < before.size && after.size >= 9, `${before.size} -> ${after.size} listings`);
  const third = await backup(3);
  t.equal(third.root, second.root);
  t.equal(third.stats.directoriesUnchanged, 9, 'and the next backup still lists every directory as before');
});
