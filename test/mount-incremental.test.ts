// What makes the mount usable for tape: metadata of an unchanged file is identical from
// one snapshot to the next and across remounts, a changed file looks newer than any job
// that read the previous snapshot, and GNU tar's listed-incremental mode of last/
// therefore archives exactly what changed.
import t from 'tap';
import { promises as fs, type BigIntStats } from 'node:fs';
import path from 'node:path';
import { generateSmallTree, mutateFiles } from './helpers/tree-gen.js';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground, waitFor } from './helpers/mount.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';

type Shown = Pick<BigIntStats, 'ino' | 'mode' | 'uid' | 'gid' | 'size' | 'mtimeNs' | 'ctimeNs' | 'nlink'>;

async function shown(p: string): Promise<Shown> {
  const s = await fs.lstat(p, { bigint: true });
  return { ino: s.ino, mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs, nlink: s.nlink };
}

async function walk(root: string, rel = ''): Promise<{ files: string[]; dirs: string[] }> {
  const out = { files: [] as string[], dirs: [] as string[] };
  for (const e of await fs.readdir(path.join(root, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) {
      out.dirs.push(r);
      const sub = await walk(root, r);
      out.files.push(...sub.files);
      out.dirs.push(...sub.dirs);
    } else out.files.push(r);
  }
  return out;
}

t.test('unchanged files keep every stat field; tar --listed-incremental of last/ gets exactly the changes', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-incr');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  const files = await generateSmallTree(src, { files: 80, dirs: 9, seed: 11 });
  await fs.link(path.join(src, files[1]!), path.join(src, 'hardlink-to-f1'));
  await fs.symlink(files[2]!, path.join(src, 'symlink-to-f2'));
  await initRepo(repo);
  const day1 = await backup(repo, src, 'src', '2026-03-01T12:00:00Z');
  const pub1 = BigInt(day1.generations[String(day1.generation)]);
  await fs.mkdir(mnt);
  let m = await mountForeground(t, repo, mnt);
  const last = path.join(mnt, 'src', 'last') + '/';

  // Level 0 of the tape job, reading last/ (day 1).
  const snar = path.join(work, 'level0.snar');
  const tar = (archive: string, listed: string) =>
    runProcess('tar', ['--create', `--file=${archive}`, `--listed-incremental=${listed}`, '--no-check-device', '-C', last, '.']);
  await tar(path.join(work, 'level0.tar'), snar);

  // The next day: 3 files changed, 1 added, 1 removed.
  const changed = [files[3]!, files[17]!, files[40]!];
  const removed = files[55]!;
  const added = path.posix.join(path.posix.dirname(files[5]!), 'added-on-day-2.dat');
  await mutateFiles(src, changed, 2);
  await fs.writeFile(path.join(src, added), 'new on day 2\n');
  await fs.unlink(path.join(src, removed));
  const day2 = await backup(repo, src, 'src', '2026-03-02T12:00:00Z');
  const seen = Date.now();

  // last moves without a remount.
  const moved = await waitFor(async () => (await fs.readlink(path.join(mnt, 'src', 'last'))) === day2.name, 5000, 20);
  t.ok(moved, 'last points to day 2');
  t.ok(Date.now() - seen < 2000, `last moved within 2 s of the commit (${Date.now() - seen} ms)`);

  const dir1 = path.join(mnt, 'src', day1.name);
  const dir2 = path.join(mnt, 'src', day2.name);
  const tree1 = await walk(dir1);
  const tree2 = await walk(dir2);
  const unchanged = tree1.files.filter((f) => !changed.includes(f) && f !== removed);
  t.same(tree2.files.sort(), [...unchanged, ...changed, added].sort(), 'day 2 has the day-2 files');

  const before = new Map<string, [Shown, Shown]>();
  let differing = 0;
  for (const f of unchanged) {
    const [a, b] = await Promise.all([shown(path.join(dir1, f)), shown(path.join(dir2, f))]);
    before.set(f, [a, b]);
    if (JSON.stringify(a, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) !== JSON.stringify(b, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))) {
      differing++;
      t.same(b, a, `${f}: identical stat in both snapshots`);
    }
  }
  t.equal(differing, 0, `all ${unchanged.length} unchanged files show identical inode, mode, uid, gid, size, mtime, ctime`);
  for (const f of unchanged) {
    t.ok(before.get(f)![0].ctimeNs <= pub1, `${f}: ctime not after day 1's publication`);
  }
  for (const f of [...changed, added]) {
    const s = await shown(path.join(dir2, f));
    t.ok(s.ctimeNs > pub1, `${f}: ctime (${s.ctimeNs}) after day 1's publication (${pub1})`);
  }
  for (const f of changed) {
    t.not((await shown(path.join(dir2, f))).ino, (await shown(path.join(dir1, f))).ino, `${f}: a changed file gets a new inode number`);
  }
  const h1 = await shown(path.join(dir2, 'hardlink-to-f1'));
  const h2 = await shown(path.join(dir2, files[1]!));
  t.equal(h1.ino, h2.ino, 'both names of a hard link share one inode number');
  t.equal(h1.nlink, 2n, 'and report nlink 2');
  const dirInodes1 = new Map<string, bigint>();
  for (const d of ['', ...tree1.dirs]) {
    const [a, b] = await Promise.all([fs.lstat(path.join(dir1, d), { bigint: true }), fs.lstat(path.join(dir2, d), { bigint: true })]);
    t.equal(b.ino, a.ino, `directory ${d || '.'} keeps its inode number`);
    dirInodes1.set(d, a.ino);
  }

  // Level 1 after last moved: exactly the changed and added files, plus directories.
  const snar1 = path.join(work, 'level1.snar');
  await fs.copyFile(snar, snar1);
  await tar(path.join(work, 'level1.tar'), snar1);
  const listing = (await runProcess('tar', ['-tf', path.join(work, 'level1.tar')])).stdout.split('\n').filter(Boolean);
  const members = listing.filter((l) => !l.endsWith('/')).map((l) => l.replace(/^\.\//, '')).sort();
  t.same(members, [...changed, added].sort(), 'level 1 archives exactly the changed and added files');

  // Restoring level 0 then level 1 gives the day-2 tree (the removal too).
  const restored = path.join(work, 'restored');
  await fs.mkdir(restored);
  for (const a of ['level0.tar', 'level1.tar']) {
    await runProcess('tar', ['--extract', '--listed-incremental=/dev/null', `--file=${path.join(work, a)}`, '-C', restored]);
  }
  const diff = await runProcess('diff', ['-r', '--no-dereference', src, restored], { allowFail: true });
  t.equal(diff.stdout, '', 'level 0 + level 1 restore to the day-2 source');

  // Unmount and mount again: the same numbers.
  await m.stop();
  m = await mountForeground(t, repo, mnt);
  let changedAfterRemount = 0;
  for (const f of unchanged) {
    const [a, b] = await Promise.all([shown(path.join(dir1, f)), shown(path.join(dir2, f))]);
    const [a0] = before.get(f)!;
    for (const s of [a, b]) {
      if (JSON.stringify(s, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) !== JSON.stringify(a0, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))) {
        changedAfterRemount++;
        t.same(s, a0, `${f}: identical after a remount`);
      }
    }
  }
  t.equal(changedAfterRemount, 0, 'every unchanged file shows the same stat after a remount');
  for (const [d, ino] of dirInodes1) t.equal((await fs.lstat(path.join(dir2, d), { bigint: true })).ino, ino, `directory ${d || '.'}: same inode after a remount`);
});
