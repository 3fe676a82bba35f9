// Listings that look up (READDIRPLUS, negotiated by native/src/fuse_ll.c although libfuse 2.9
// predates it): once a walk stats names, each listing hands the kernel every entry's node and
// attributes, so that tar sends no LOOKUP for them. What the kernel learns that way must be
// what a lookup answers, and every node so handed over is a reference the server counts and
// gets back.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground, serverMemory, sleep } from './helpers/mount.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const isRoot = process.getuid?.() === 0;

/**
 * One line per entry: what stat shows, but the inode (and ctime, which the mount sets to
 * `since`), and a directory's size, which is the source file system's own (the mount says 0).
 */
const FIELDS = '%p %n %m %U %G %s %T@ %y %l';
const listing = async (dir: string): Promise<string> => {
  const dirFields = FIELDS.replace('%s', '-');
  const find = `find . \\( -type d -printf "${dirFields}\\n" \\) -o -printf "${FIELDS}\\n"`;
  return (await runProcess('sh', ['-c', `cd "$1" && ${find} | LC_ALL=C sort`, 'sh', dir])).stdout;
};
const paths = async (dir: string): Promise<string[]> =>
  (await runProcess('sh', ['-c', 'cd "$1" && find . | LC_ALL=C sort', 'sh', dir])).stdout.trim().split('\n');

t.test('READDIRPLUS: tar sends no lookups, and what the listings told the kernel is what lookups answer', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-readdirplus');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  // A file sorted before the directories: its lookup tells the server a walk stats names.
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'a-file'), 'first\n');
  let files = 0;
  for (const d of ['d1', 'd2', 'd3']) {
    const dir = path.join(src, d);
    await fs.mkdir(path.join(dir, 'sub'), { recursive: true });
    for (let i = 0; i < 60; i++, files++) await fs.writeFile(path.join(dir, `f${i}`), `${d}/${i}\n`.repeat(i + 1));
    await fs.chmod(path.join(dir, 'f1'), 0o4755);
    await fs.chmod(path.join(dir, 'f2'), 0o600);
    await fs.utimes(path.join(dir, 'f3'), new Date('2001-02-03T04:05:06.789Z'), new Date('2001-02-03T04:05:06.789Z'));
    await fs.symlink('f0', path.join(dir, 'link'));
    await fs.symlink('nowhere', path.join(dir, 'dangling'));
    await fs.link(path.join(dir, 'f4'), path.join(dir, 'hard'));
    await fs.writeFile(path.join(dir, 'sub', 'deep'), 'deep\n');
    if (isRoot) await fs.chown(path.join(dir, 'f5'), 1234, 5678);
  }
  await runProcess('mkfifo', [path.join(src, 'd1', 'fifo')]);
  await initRepo(repo);
  await backup(repo, src, 'plus');
  await fs.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt);
  const last = path.join(mnt, 'plus', 'last');

  // The tape job's walk.
  const before = (await serverMemory(m)).requests;
  const tarSum = async (dir: string): Promise<string> =>
    (await runProcess('sh', ['-c', 'tar -C "$1" --sort=name -cf - . | md5sum', 'sh', dir])).stdout;
  t.equal(await tarSum(last), await tarSum(src), 'tar of the snapshot is byte for byte the tar of the source');
  const after = await serverMemory(m);
  const delta = (op: string): number => (after.requests[op] ?? 0) - (before[op] ?? 0);
  t.ok(delta('READDIRPLUS') >= 6, `the kernel listed with READDIRPLUS (${delta('READDIRPLUS')} requests)`);
  t.ok(delta('LOOKUP') <= 12, `tar of ${files} files sent ${delta('LOOKUP')} lookups (the top level's, before the walk was recognized)`);
  t.ok(after.held >= files, `the server counts the nodes the listings handed over (${after.held} held)`);

  // Every field a stat shows, from the listings' nodes, equals the source's.
  t.equal(await listing(last), await listing(src), 'find -printf of the mount (names, links, modes, owners, sizes, mtimes in ns, types, targets) equals the source');

  // The same paths stat'ed one by one, inode and ctime included: first from what the listings
  // told the kernel, then, once the kernel let its dentries and inodes go (every node comes
  // back as a forget), from lookups. The two encodings of attributes in the binding agree.
  const walked = await paths(last);
  const statAll = async (): Promise<string> =>
    (await runProcess('sh', ['-c', 'cd "$1" && shift && stat -c "%n %h %a %u %g %s %.9Y %F %i %.9Z" "$@"', 'sh', last, ...walked])).stdout;
  const viaListings = await statAll();
  if (isRoot) {
    await fs.writeFile('/proc/sys/vm/drop_caches', '2');
    let held = after.held;
    for (let i = 0; i < 50 && held > after.held / 2; i++) {
      await sleep(100);
      held = (await serverMemory(m)).held;
    }
    t.ok(held <= after.held / 2, `after drop_caches the kernel gave the nodes back (${after.held} -> ${held} held)`);
  }
  const lookupsBefore = (await serverMemory(m)).requests.LOOKUP ?? 0;
  const viaLookups = await statAll();
  if (isRoot) t.ok(((await serverMemory(m)).requests.LOOKUP ?? 0) > lookupsBefore, 'those stats looked the paths up again');
  t.equal(viaLookups, viaListings, `stat of ${walked.length} paths: the same from listings as from lookups`);
  await m.stop();
});
