// What listings of snapshot content carry besides names.
// - The kernel reads a directory until a readdir comes back empty. The binding answers that
//   last readdir itself, once JS sent the final entries: listings must still be complete
//   (small, empty and multi-page directories, with and without nodes, listed again after
//   the kernel forgot everything), and directories that change (a source's list of
//   snapshots) must never be cut short by it.
// - Every listing hands the kernel its subdirectories' nodes (READDIRPLUS), so that a walk
//   such as find descends without a lookup, while files get nodes only in a walk that
//   stats them.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground, serverMemory, waitFor } from './helpers/mount.js';
import { flipTreeByte } from './helpers/damage.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const BIG = 3000; // several readdir pages, with and without nodes

/** `ls -a`'s names (one per line, readdir order kept with -f). */
async function listing(dir: string, flags = '-af'): Promise<string[]> {
  const r = await runProcess('ls', [flags, dir]);
  return r.stdout.split('\n').filter((l) => l !== '');
}

async function dropCaches(): Promise<void> {
  await fs.writeFile('/proc/sys/vm/drop_caches', '3').catch(() => undefined); // root only; the listings below then come from the server again
}

t.test('a listing of snapshot content ends without a trip to JS, and stays complete', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-listing-end');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(path.join(src, 'small'), { recursive: true });
  await fs.mkdir(path.join(src, 'empty'));
  await fs.mkdir(path.join(src, 'big'));
  for (const n of ['a', 'b', 'c']) await fs.writeFile(path.join(src, 'small', n), n);
  await runProcess('sh', ['-c', `cd "$1" && seq -f 'm%05g' 1 ${BIG} | xargs touch`, 'sh', path.join(src, 'big')]);
  await initRepo(repo);
  await backup(repo, src, 'data', '2026-03-01T10:00:00Z');
  await fs.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt);
  const last = path.join(mnt, 'data', 'last');

  const expected = async (dir: string): Promise<string[]> => ['.', '..', ...(await fs.readdir(dir)).sort()];
  const ends = async (): Promise<number> => (await serverMemory(m)).requests["READDIR of a listing's end"] ?? 0;

  for (const pass of ['first listing', 'after the kernel forgot (drop_caches)']) {
    const before = await ends();
    for (const d of ['small', 'empty', 'big']) {
      t.same(await listing(path.join(last, d)), await expected(path.join(src, d)), `${pass}: ls -af ${d} lists every entry in order`);
    }
    // ls -l looks names up, so the next listings carry nodes (READDIRPLUS pages, fewer entries each).
    const long = await runProcess('sh', ['-c', 'ls -l "$1" | tail -n +2 | wc -l', 'sh', path.join(last, 'big')]);
    t.equal(Number(long.stdout.trim()), BIG, `${pass}: ls -l big shows all ${BIG} entries`);
    t.same(await listing(path.join(last, 'big')), await expected(path.join(src, 'big')), `${pass}: listed again with nodes, still complete`);
    const answered = (await ends()) - before;
    t.ok(answered >= 4, `${pass}: the ends of the listings were answered by the binding (${answered})`);
    await dropCaches();
  }

  // A source directory lists its snapshots: it changes, so its end is always JS's answer.
  const sourceDir = path.join(mnt, 'data');
  t.same(await listing(sourceDir), ['.', '..', '2026-03-01', 'last'], 'the source lists its one snapshot');
  await fs.writeFile(path.join(src, 'small', 'd'), 'd');
  await backup(repo, src, 'data', '2026-03-02T10:00:00Z');
  await waitFor(async () => (await listing(sourceDir)).length === 5 || undefined, 10_000);
  t.same(await listing(sourceDir), ['.', '..', '2026-03-01', '2026-03-02', 'last'], 'a new snapshot shows in the source directory listed before');
  t.same(await listing(path.join(mnt, 'data', '2026-03-02', 'small')), ['.', '..', 'a', 'b', 'c', 'd'], 'and its content lists in full');
  t.same(await listing(path.join(mnt, 'data', '2026-03-01', 'small')), ['.', '..', 'a', 'b', 'c'], 'the older snapshot still lists as it was');
});

t.test('find descends through listings: no lookup per directory, no node per file', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-listings-find');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  const DIRS = 40;
  for (let i = 0; i < DIRS; i++) {
    const d = path.join(src, `user${i % 8}`, `folder${i}`);
    await fs.mkdir(d, { recursive: true });
    for (let k = 0; k < 3; k++) await fs.writeFile(path.join(d, `msg${k}`), `message ${i}.${k}\n`);
  }
  await initRepo(repo);
  await backup(repo, src, 'mail', '2026-03-01T10:00:00Z');
  await fs.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt);
  const snap = path.join(mnt, 'mail', '2026-03-01');
  await fs.stat(snap); // the source and snapshot directories themselves are looked up here

  const find = async (dir: string): Promise<string[]> => (await runProcess('sh', ['-c', 'cd "$1" && find . | LC_ALL=C sort', 'sh', dir])).stdout.trim().split('\n');
  const before = await serverMemory(m);
  const found = await find(snap);
  const after = await serverMemory(m);
  t.same(found, await find(src), 'find lists every directory and file of the snapshot');
  const dirs = 8 + DIRS;
  const lookups = (after.requests.LOOKUP ?? 0) - (before.requests.LOOKUP ?? 0);
  t.equal(lookups, 0, `no directory was looked up: the listings handed over their nodes (${dirs} directories)`);
  const taken = after.fromListings - before.fromListings;
  t.ok(taken >= dirs && taken < dirs + DIRS * 3, `the kernel took the ${dirs} directories' nodes from listings and none of the files' (${taken})`);

  // A walk that stats every name still gets every node from the listings.
  const tarred = await runProcess('sh', ['-c', 'tar -cf - -C "$1" . | tar -tf - | LC_ALL=C sort | wc -l', 'sh', path.join(mnt, 'mail', 'last')]);
  t.equal(Number(tarred.stdout.trim()), found.length, 'tar of last/ archives every entry');
  const walked = await serverMemory(m);
  t.ok((walked.requests.LOOKUP ?? 0) - (after.requests.LOOKUP ?? 0) <= 8, `tar looked up at most the first directory's names itself (${(walked.requests.LOOKUP ?? 0) - (after.requests.LOOKUP ?? 0)})`);
});

t.test('a damaged directory read ahead by a listing fails when listed, and only it', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-listings-damage');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  for (const d of ['a', 'b', 'c']) {
    await fs.mkdir(path.join(src, d, 'inner'), { recursive: true });
    await fs.writeFile(path.join(src, d, 'inner', 'file'), `${d}\n`);
  }
  await initRepo(repo);
  await backup(repo, src, 'data', '2026-03-01T10:00:00Z');
  await flipTreeByte(repo, 'data', 'b');
  await fs.mkdir(mnt);
  await mountForeground(t, repo, mnt);
  const snap = path.join(mnt, 'data', '2026-03-01');

  // find lists the top first (its subdirectories' trees are read ahead then), then each.
  const r = await runProcess('find', ['.'], { cwd: snap, allowFail: true });
  t.not(r.code, 0, 'find fails');
  t.match(r.stderr, /\.\/b.*Input\/output error/, 'and names the damaged directory with EIO');
  t.same(r.stdout.trim().split('\n').sort(), ['.', './a', './a/inner', './a/inner/file', './b', './c', './c/inner', './c/inner/file'], 'every other directory is listed');
  const again = await runProcess('ls', [path.join(snap, 'b')], { allowFail: true });
  t.match(again.stderr, /Input\/output error/, 'listing it again fails the same way (the failed read is not kept)');
  t.equal(await fs.readFile(path.join(snap, 'c', 'inner', 'file'), 'utf8'), 'c\n', 'the mount still reads the rest');
});
