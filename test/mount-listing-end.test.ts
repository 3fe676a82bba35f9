// The kernel reads a directory until a readdir comes back empty. For directories of
// snapshot content the binding answers that last readdir itself, once JS sent the final
// entries: listings must still be complete (small, empty and multi-page directories, with
// and without nodes, listed again after the kernel forgot everything), and directories
// that change (a source's list of snapshots) must never be cut short by it.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground, serverMemory, waitFor } from './helpers/mount.js';

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
