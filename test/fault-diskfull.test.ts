// Disk full at every stage: the repository lives on a small tmpfs, and a ballast file leaves
// a random amount of room before each backup (and before prune and repair index), so
// ENOSPC lands in a pack write, a pack seal, an index commit or the snapshot record. Each
// command ends within seconds with exit 16 and a clear message (no hang, no stack trace) or
// succeeds; the repository stays valid (check --read-data) and, with room again, the next
// backup succeeds and every committed snapshot restores byte-identical.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { XorShift32, generateSmallTree, isRoot, mutateFiles } from './helpers/tree-gen.js';
import { initRepo } from './helpers/history.js';
import { assertClean, contentManifest, restoreHonestly, snapfs } from './helpers/fault.js';

const ITERATIONS = Number(process.env.SNAPFS_DISKFULL_ITERATIONS ?? 8);

async function freeBytes(dir: string): Promise<number> {
  const s = await fsp.statfs(dir);
  return s.bavail * s.bsize;
}

t.test('ENOSPC at random points of backup, prune and repair index', { skip: !isRoot && 'needs root to mount a tmpfs' }, async (t) => {
  const work = await tmpDir(t, 'fault-diskfull');
  const small = join(work, 'small');
  await fsp.mkdir(small);
  await runProcess('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', small]);
  t.teardown(() => runProcess('umount', ['-l', small], { allowFail: true }));
  const repo = join(small, 'repo');
  const ballast = join(small, 'ballast');
  const src = join(work, 'src');
  const files = await generateSmallTree(src, { files: 200, dirs: 6, seed: 17 });
  const rng = new XorShift32(31);
  await initRepo(repo);
  const committed = new Map<string, Map<string, string>>();
  const first = await snapfs(['backup', repo, src, '--source', 'full', '--json']);
  assertClean(t, first, 'first backup', [0]);
  committed.set(first.json.snapshot.id, await contentManifest(src));

  let full = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    // New data (about 6 MiB) and a random amount of room for it.
    await mutateFiles(src, files.filter((_, k) => (k + i) % 5 === 0), 500 + i);
    await fsp.writeFile(join(src, `new-${i}.bin`), rng.bytes(6 * 1024 * 1024));
    await fsp.rm(join(src, `new-${i - 2}.bin`), { force: true });
    // Half the time room enough for the 6-12 MiB the backup needs, half the time less.
    const room = rng.next() % 2 ? 14 * 1024 * 1024 + (rng.next() % (6 * 1024 * 1024)) : rng.next() % (8 * 1024 * 1024);
    t.comment(`iteration ${i}: ${await freeBytes(small)} bytes free before the ballast, ${room} left`);
    await fsp.writeFile(ballast, Buffer.alloc(Math.max(0, (await freeBytes(small)) - room)));
    const seen = await contentManifest(src);
    const started = Date.now();
    const b = await snapfs(['backup', repo, src, '--source', 'full', '--json'], 60_000);
    assertClean(t, b, `iteration ${i}: backup with ${room} bytes of room`, [0, 16]);
    t.ok(Date.now() - started < 30_000, `iteration ${i}: it ended (${Date.now() - started} ms)`);
    if (b.code === 16) {
      full++;
      t.match(b.stderr, /no space left on device/i, `iteration ${i}: says the disk is full`);
    } else if (b.code === 0) committed.set(b.json.snapshot.id, seen);

    // prune and repair index on the full disk: refused cleanly or done.
    assertClean(t, await snapfs(['prune', repo, '--repack-threshold', '0.9'], 60_000), `iteration ${i}: prune on a full disk`, [0, 16]);
    assertClean(t, await snapfs(['repair', 'index', repo], 60_000), `iteration ${i}: repair index on a full disk`, [0, 16]);

    await fsp.rm(ballast);
    const list = await snapfs(['snapshots', repo, '--json']);
    // An index swap cut short by ENOSPC leaves no index: the message names repair index.
    if (list.code === 15) assertClean(t, await snapfs(['repair', 'index', repo]), `iteration ${i}: repair index with room again`, [0]);
    const now = await snapfs(['snapshots', repo, '--json']);
    assertClean(t, now, `iteration ${i}: snapshots`, [0]);
    t.same((now.json?.snapshots ?? []).map((s: any) => s.id).sort(), [...committed.keys()].sort(), `iteration ${i}: exactly the committed snapshots`);
    assertClean(t, await snapfs(['check', repo, '--read-data']), `iteration ${i}: check --read-data`, [0]);
    // Keep the repository small: only the newest two survive.
    const f = await snapfs(['forget', repo, '--keep-last', '2', '--json']);
    for (const s of f.json?.snapshots ?? []) if (s.action === 'remove') committed.delete(s.id);
    assertClean(t, await snapfs(['prune', repo]), `iteration ${i}: prune with room`, [0]);
  }
  t.comment(`${full} of ${ITERATIONS} backups ran out of space`);
  t.ok(full >= 1, 'the disk did fill up');
  const last = await snapfs(['backup', repo, src, '--source', 'full', '--json']);
  assertClean(t, last, 'backup with room again', [0]);
  committed.set(last.json.snapshot.id, await contentManifest(src));
  for (const [id, files] of committed) t.equal(await restoreHonestly(t, repo, `full@${id}`, files, join(work, 'out')), 0, `full@${id.slice(0, 8)} restores identical`);
});
