// Entries that changed too recently for their times to be trusted ("racily clean" in git's
// words): a file rewritten in place just after the backup read it, within one tick of the
// file system's clock, keeps its size, mtime, ctime and inode. The backup that read it marks
// it to be read again (ctime 0), so the next backup stores the later version instead of
// reusing the earlier one forever.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { backup } from '../lib/backup/backup.js';
import { Repository } from '../lib/store/repository.js';
import type { SnapshotRecord } from '../lib/format/snapshot.js';
import { runProcess, runSnapfs, tmpDir } from './helpers/cli.js';
import { MemfsServer, mountPoints } from './helpers/memfs.js';
import { assertTreesEqual } from './helpers/tree-compare.js';
import * as D from './fixtures/memfs-data.js';

/**
 * A FUSE file system with whole-second times, served by a child process, whose file
 * coarse/index is rewritten on command; stopped and unmounted when the test ends.
 */
async function coarseSource(t: any, work: string): Promise<{ server: MemfsServer; src: string }> {
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(mnt);
  const server = await MemfsServer.start('memfs', { mounts: [{ path: mnt, options: ['ro', 'default_permissions', 'fsname=memfs', 'subtype=memfs'] }] });
  t.teardown(async () => {
    await server.stop();
    if ((await mountPoints()).has(mnt)) await runProcess('umount', ['-l', mnt], { allowFail: true });
  });
  await server.next((e) => e.event === 'ready');
  return { server, src: path.join(mnt, D.COARSE_DIR) };
}

t.test('a file rewritten within the same second as the backup read it: the next backup stores the rewrite', async (t) => {
  // On a file system with whole-second times the rewrite provably leaves every time as it was.
  const work = await tmpDir(t, 'recent-coarse');
  const repoDir = path.join(work, 'repo');
  const { server, src } = await coarseSource(t, work);
  const file = path.join(src, D.COARSE_FILE);
  // Rewrites keep the size the file was first written with.
  const version = (text: string): string => text.padEnd(D.COARSE_FIRST.length - 1, '.') + '\n';
  const versionA = version('version A: at the backup');
  const versionB = version('version B: just after');
  const rewrite = async (data: string, tick?: boolean) => {
    server.send({ cmd: 'rewrite', data, tick });
    const e = await server.next((e) => e.event === 'rewritten' || e.event === 'rewrite-error');
    if (e.event !== 'rewritten') throw new Error(`memfs: ${e.message}`);
    return e;
  };

  await Repository.init(repoDir);
  // Just past a second's start, so that the walk begins within the window (2 s for
  // whole-second times) even on a busy machine.
  await sleep(1000 - (Date.now() % 1000) + 20);
  const a = await rewrite(versionA, true);
  // In this process, so that the walk starts at once: within the second of the rewrite.
  const repo = await Repository.open(repoDir);
  let first: SnapshotRecord;
  try {
    first = (await backup(repo, { source: 'c', path: src })).snapshot;
  } finally {
    await repo.close();
  }
  t.equal(first.stats.entriesChangedRecently, 1, 'the file changed this very second: its times are not trusted');
  t.equal((await runSnapfs(['cat', repoDir, `c@last:${D.COARSE_FILE}`])).stdout, versionA);

  // Rewritten in place within the same second: size, mtime, ctime and inode stay.
  const before = await fs.stat(file, { bigint: true });
  const b = await rewrite(versionB);
  t.equal(b.ctimeNs, a.ctimeNs, 'same ctime after the rewrite');
  const after = await fs.stat(file, { bigint: true });
  t.same([after.size, after.mtimeNs, after.ctimeNs, after.ino], [before.size, before.mtimeNs, before.ctimeNs, before.ino], 'stat cannot tell the versions apart');
  t.equal(await fs.readFile(file, 'utf8'), versionB, 'the source now holds version B');

  const second = await runSnapfs(['backup', repoDir, src, '--source', 'c', '--json']);
  t.equal(second.json.snapshot.stats.filesOpened, 1, 'the file marked at the first backup is read again');
  t.equal((await runSnapfs(['cat', repoDir, `c@last:${D.COARSE_FILE}`])).stdout, versionB, 'the newest snapshot holds version B');
  t.equal((await runSnapfs(['cat', repoDir, `c@${first.name}:${D.COARSE_FILE}`])).stdout, versionA, 'the first still holds A');
});

t.test('a source whose clock runs ahead: its entries are read again while their ctime is not past, and the CLI says so', async (t) => {
  const work = await tmpDir(t, 'recent-ahead');
  const repoDir = path.join(work, 'repo');
  const { server, src } = await coarseSource(t, work);
  await runSnapfs(['init', repoDir]);
  // Far enough ahead to outlast two CLI backups on a loaded machine.
  server.send({ cmd: 'rewrite', data: D.COARSE_FIRST, tick: true, aheadS: 3600 });
  await server.next((e) => e.event === 'rewritten');

  const first = await runSnapfs(['backup', repoDir, src, '--source', 'c']);
  t.match(first.stdout, /^recent: +1 entries changed too recently to trust their times: read again next time$/m, 'the CLI names the count');
  const second = await runSnapfs(['backup', repoDir, src, '--source', 'c', '--json']);
  t.equal(second.json.snapshot.stats.entriesChangedRecently, 1, 'still ahead of this clock: still not trusted');
  t.equal(second.json.snapshot.stats.filesOpened, 1, 'so read again');
  const ls = await runSnapfs(['ls', repoDir, `c@last`, '--json']);
  t.equal(ls.json.entries.find((e: any) => e.name === D.COARSE_FILE).since, 1, 'the same content keeps its since');
  t.equal((await runSnapfs(['cat', repoDir, `c@last:${D.COARSE_FILE}`])).stdout, D.COARSE_FIRST);
});

t.test('on a local file system: only the recently changed entries are read again, once, and keep their since', async (t) => {
  const work = await tmpDir(t, 'recent-local');
  // Written right before the walk starts (the backup runs in this process: no CLI start-up
  // in between): a new directory and its file. A machine too busy to start the walk within
  // the window (100 ms) after them makes the attempt prove nothing: then it is made again.
  const attempt = async (n: number) => {
    const src = path.join(work, `src${n}`);
    const repoDir = path.join(work, `repo${n}`);
    await fs.mkdir(path.join(src, 'settled'), { recursive: true });
    for (let i = 0; i < 20; i++) await fs.writeFile(path.join(src, 'settled', `m${i}`), `message ${i}\n`);
    await fs.writeFile(path.join(src, 'top'), 'settled too\n');
    await sleep(500); // well outside the window
    await Repository.init(repoDir);
    const repo = await Repository.open(repoDir);
    try {
      await fs.mkdir(path.join(src, 'fresh'));
      await fs.writeFile(path.join(src, 'fresh', 'new'), 'just written\n');
      return { src, repoDir, snapshot: (await backup(repo, { source: 's', path: src })).snapshot };
    } finally {
      await repo.close();
    }
  };
  let first = await attempt(0);
  for (let n = 1; n < 5 && first.snapshot.stats.entriesChangedRecently === 0; n++) {
    t.comment(`attempt ${n}: the walk started too late to see the entries as recent`);
    first = await attempt(n);
  }
  const { src, repoDir, snapshot } = first;
  t.equal(snapshot.stats.entriesChangedRecently, 2, 'fresh/ and fresh/new changed within the window; nothing else');
  t.equal(snapshot.stats.filesOpened, 22);
  const firstSince = snapshot.generation;
  await sleep(200);

  const second = await runSnapfs(['backup', repoDir, src, '--source', 's', '--json']);
  const s2 = second.json.snapshot.stats;
  t.equal(s2.entriesChangedRecently, 0);
  t.equal(s2.filesOpened, 1, 'exactly the recent file is read again');
  const ls = await runSnapfs(['ls', repoDir, 's@last:fresh', '--json']);
  const entry = ls.json.entries.find((e: any) => e.name === 'new');
  t.equal(entry.since, firstSince, 'read again and found the same: it keeps the since of the snapshot that first stored it');

  // Now settled with its real times: the third backup opens nothing, and every directory's
  // listing is remembered (the unsettled ones were not, the first time).
  const third = await runSnapfs(['backup', repoDir, src, '--source', 's', '--json']);
  t.equal(third.json.snapshot.stats.filesOpened, 0, 'nothing read a third time');
  t.equal(third.json.snapshot.root, second.json.snapshot.root, 'the same tree');
  t.equal(second.json.snapshot.stats.directoriesUnchanged, 1, 'the second backup found settled/ as the first listed it; the root and fresh/ were not remembered');
  t.equal(third.json.snapshot.stats.directoriesUnchanged, 3, 'the third finds all three as the second listed them');

  const out = path.join(work, 'out');
  await runSnapfs(['restore', repoDir, 's@last', out]);
  await assertTreesEqual(t, src, out);
});
