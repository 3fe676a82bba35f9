// The kernel keeps every name it looked up until memory pressure makes it let go, and the
// server keeps a record for each node the kernel holds. The mount asks the kernel to let go
// (entry invalidations, lib/fuse/held-nodes.ts) of a forgotten snapshot's directory at
// once, and of every snapshot directory when the held nodes pass a budget; what is in use
// stays, and what is looked up again is the same as before.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { runProcess, runSnapfs, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, Mounted, mountForeground, serverMemory, sleep } from './helpers/mount.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const DIRS = 4;
const FILES_PER_DIR = 150;
const FILES = DIRS * FILES_PER_DIR;

async function makeTree(src: string): Promise<void> {
  for (let d = 0; d < DIRS; d++) {
    const dir = path.join(src, `d${d}`, 'sub');
    await fs.mkdir(dir, { recursive: true });
    for (let i = 0; i < FILES_PER_DIR; i++) await fs.writeFile(path.join(src, `d${d}`, `f${i}`), `d${d}/f${i}\n`.repeat(1 + (i % 7)));
    await fs.writeFile(path.join(dir, 'deep'), `deep ${d}\n`);
  }
}

/** A tree of FILES files backed up on two days, one file changed on the second; the mount point made. */
async function twoDays(t: any, name: string, changed: string): Promise<{ src: string; repo: string; mnt: string; day1: any; day2: any }> {
  const work = await tmpDir(t, name);
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await makeTree(src);
  await initRepo(repo);
  const day1 = await backup(repo, src, 'mail', '2026-03-01T12:00:00Z');
  await fs.writeFile(path.join(src, changed), 'changed on day 2\n');
  const day2 = await backup(repo, src, 'mail', '2026-03-02T12:00:00Z');
  await fs.mkdir(mnt);
  return { src, repo, mnt, day1, day2 };
}

/** Every path under `dir`, stat'ed (name, inode, mode, size, mtime and ctime in ns): lookups the kernel keeps. */
const statWalk = async (dir: string): Promise<string> =>
  (await runProcess('sh', ['-c', 'cd "$1" && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c "%n %i %f %s %.9Y %.9Z"', 'sh', dir])).stdout;

/** Polls the server's count of held nodes until `ok` says yes or `ms` pass; the last count. */
async function heldUntil(m: Mounted, ok: (held: number) => boolean, ms: number): Promise<number> {
  const until = Date.now() + ms;
  let held = (await serverMemory(m)).held;
  while (!ok(held) && Date.now() < until) {
    await sleep(250);
    held = (await serverMemory(m)).held;
  }
  return held;
}

t.test("a forgotten snapshot's nodes are let go at once; the kept snapshot's stay and read the same", { skip }, async (t) => {
  const { src, repo, mnt, day1, day2 } = await twoDays(t, 'mount-held-forget', 'd0/f0');
  const m = await mountForeground(t, repo, mnt);

  const walk1 = await statWalk(path.join(mnt, 'mail', day1.name));
  const walk2 = await statWalk(path.join(mnt, 'mail', day2.name));
  t.equal(walk1.split('\n').length, walk2.split('\n').length, 'both snapshots walked');
  const both = (await serverMemory(m)).held;
  t.ok(both >= 2 * FILES, `the kernel holds the nodes of both walks (${both} held)`);

  t.equal((await runSnapfs(['forget', repo, '--keep-last', '1'])).code, 0, 'forget keeps only the second snapshot');
  const after = await heldUntil(m, (h) => h < both - FILES, 5000);
  t.ok(after < both - FILES, `within 5 s of the forget the kernel let go of the first snapshot's nodes (${both} -> ${after} held)`);
  t.ok(after >= FILES, `the second snapshot's nodes are still held (${after})`);
  t.ok(((await serverMemory(m)).requests['entries invalidated'] ?? 0) >= 1, 'through an entry invalidation');
  t.same((await fs.readdir(path.join(mnt, 'mail'))).sort(), [day2.name, 'last'].sort(), 'the source directory lists the kept snapshot and last');
  t.equal(await statWalk(path.join(mnt, 'mail', 'last')), walk2, 'the kept snapshot stats the same through last');
  const diff = await runProcess('diff', ['-r', src, path.join(mnt, 'mail', 'last')], { allowFail: true });
  t.equal(diff.code, 0, `diff -r of the source and last/: ${diff.stdout.slice(0, 300)}`);
  await m.stop();
});

t.test('over the budget the kernel lets go of what nothing uses; an open file and what is looked up again stay the same', { skip }, async (t) => {
  const { src, repo, mnt, day1 } = await twoDays(t, 'mount-held-budget', 'd1/f1');
  const budget = 100;
  const m = await mountForeground(t, repo, mnt, [], { SNAPFS_HELD_NODES_BUDGET: String(budget) });

  // Held open across the trims: it must keep reading.
  const openPath = path.join(mnt, 'mail', day1.name, 'd2', 'f6');
  const open = await fs.open(openPath, 'r');
  t.teardown(() => open.close().catch(() => undefined));
  const expected = await fs.readFile(path.join(src, 'd2', 'f6'));

  const walk1 = await statWalk(path.join(mnt, 'mail', day1.name));
  const walkLast = await statWalk(path.join(mnt, 'mail', 'last'));
  const held = await heldUntil(m, (h) => h <= budget, 25_000);
  t.ok(held <= budget, `after the walks of ${2 * FILES} files the held nodes came back under the budget of ${budget} (${held} held)`);
  t.ok(((await serverMemory(m)).requests['entries invalidated'] ?? 0) >= 1, 'through entry invalidations');

  const again = Buffer.alloc(expected.length + 16);
  const r = await open.read(again, 0, again.length, 0);
  t.same(again.subarray(0, r.bytesRead), expected, 'the file held open across the trims reads its bytes');
  t.equal(await statWalk(path.join(mnt, 'mail', day1.name)), walk1, 'stat of every path of the first snapshot, looked up again: the same inodes, modes, sizes, mtimes and ctimes');
  t.equal(await statWalk(path.join(mnt, 'mail', 'last')), walkLast, 'and of last/');
  const diff = await runProcess('diff', ['-r', src, path.join(mnt, 'mail', 'last')], { allowFail: true });
  t.equal(diff.code, 0, `diff -r of the source and last/: ${diff.stdout.slice(0, 300)}`);
  await m.stop();
});
