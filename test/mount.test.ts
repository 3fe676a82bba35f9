// The FUSE mount with real tools: what diff, cp -a, tar, ls, stat and df see through
// the kernel. The mount is served by a child process; this process never blocks on it.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { generateFidelityTree } from './helpers/tree-gen.js';
import { compareTrees } from './helpers/tree-compare.js';
import { runProcess, runSnapfs, tmpDir } from './helpers/cli.js';
import {
  backup,
  exitCodeOf,
  fuseAvailable,
  initRepo,
  isMounted,
  mountForeground,
  forceUnmount,
  waitFor,
} from './helpers/mount.js';
import { toFuseName, fromFuseName } from '../lib/fuse/names.js';

const chunk = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };

// CI runs as root with /dev/fuse; elsewhere say plainly why nothing ran.
const skip = !(await fuseAvailable()) && 'needs /dev/fuse';

t.test('names that are not UTF-8 get a reversible spelling', async (t) => {
  t.equal(toFuseName(Buffer.from('plain é name')), 'plain é name', 'valid UTF-8 is shown as is');
  t.equal(toFuseName(Buffer.from([0x66, 0xff, 0xfe])), 'f\uf7ff\uf7fe', 'each invalid byte b becomes U+F700+b');
  t.equal(toFuseName(Buffer.from([0x64, 0xe9])), 'd\uf7e9', 'a truncated sequence is escaped');
  t.equal(toFuseName(Buffer.from([0xc0, 0x80])), '\uf7c0\uf780', 'overlong encodings are escaped');
  t.equal(toFuseName(Buffer.from([0xed, 0xa0, 0x80])), '\uf7ed\uf7a0\uf780', 'encoded surrogates are escaped');
  for (const raw of [[0x66, 0xff, 0xfe], [0xc3, 0xc3, 0xa9], [0xe9, 0x41], [0xf4, 0x90, 0x80, 0x80], [0x80]]) {
    const b = Buffer.from(raw);
    const candidates = fromFuseName(toFuseName(b));
    t.ok(candidates.some((c) => c.equals(b)), `round trip of ${b.toString('hex')}`);
  }
  t.same(fromFuseName('abc'), [Buffer.from('abc')], 'a plain name has one reading');
});

t.test('diff -r, cp -a and tar see the source tree exactly', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-fidelity');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await generateFidelityTree(src, { chunk, bigFileBytes: 8 * 1024 * 1024 });
  await initRepo(repo);
  const snap = await backup(repo, src, 'host/fid');
  await fs.mkdir(mnt);

  // What the mount must show: the source, exactly: names and symlink targets as raw
  // bytes, mtimes to the nanosecond (snapfs's own low-level binding passes both).
  const expected = src;
  t.ok((await fs.readdir(path.join(src, 'names'), { encoding: 'buffer' })).some((n) => !Buffer.from(n.toString('utf8')).equals(n)), 'the fidelity tree has non-UTF-8 names to check');

  await mountForeground(t, repo, mnt);
  const dated = path.join(mnt, 'host', 'fid', snap.name);
  const last = path.join(mnt, 'host', 'fid', 'last') + '/';

  // diff cannot compare fifos and device nodes and says so; types are checked below.
  const diff = await runProcess('diff', ['-r', '--no-dereference', expected, dated], { allowFail: true });
  const lines = diff.stdout.split('\n').filter(Boolean);
  const real = lines.filter((l) => !/^File .* is a (fifo|character special file|block special file|socket) while file .* is a \1$/.test(l));
  t.same(real, [], 'diff -r finds no difference');
  t.ok(diff.code === 0 || real.length === 0, `diff ran (exit ${diff.code}): ${diff.stderr}`);

  // The mount itself, then a cp -a copy of it: every stat field compareTrees checks.
  t.same(await compareTrees(expected, dated), [], 'the snapshot dir matches the source');
  const copy = path.join(work, 'copy');
  await runProcess('cp', ['-a', last, copy]);
  t.same(await compareTrees(expected, copy), [], 'cp -a of last/ reproduces the source');

  // tar: the same members, modes, owners, sizes, times, link targets and hard links.
  const list = (dir: string) => runProcess('sh', ['-c', 'tar --sort=name -cf - -C "$1" . | tar -tvf -', 'sh', dir]);
  const [a, b] = await Promise.all([list(expected), list(last)]);
  t.equal(b.stdout, a.stdout, 'tar -c of last/ lists the same entries as of the source');
  t.ok(a.stdout.includes('link to'), 'the listing includes hard links');
});

t.test('layout: nested sources, one dir per snapshot, last, synthetic dirs', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-layout');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(path.join(src, 'sub'), { recursive: true });
  await fs.writeFile(path.join(src, 'sub', 'file'), 'hello\n');
  await fs.chmod(src, 0o750);
  await initRepo(repo);
  const day1 = await backup(repo, src, '10.0.0.5/mail', '2026-01-01T10:00:00Z');
  const day1b = await backup(repo, src, '10.0.0.5/mail', '2026-01-01T18:00:00Z');
  await backup(repo, src, '10.0.0.5/mail/imap', '2026-01-02T10:00:00Z');
  await backup(repo, src, 'web', '2026-01-03T10:00:00Z');
  t.not(day1.name, day1b.name, 'a second snapshot the same day gets its own name');
  await fs.mkdir(mnt);
  await mountForeground(t, repo, mnt);

  const ls = async (p: string) => (await fs.readdir(path.join(mnt, p))).sort();
  t.same(await ls(''), ['10.0.0.5', 'web']);
  t.same(await ls('10.0.0.5'), ['mail']);
  t.same(await ls('10.0.0.5/mail'), [day1.name, day1b.name, 'imap', 'last'].sort(), 'a source that is also a prefix shows both');
  t.equal(await fs.readlink(path.join(mnt, '10.0.0.5/mail/last')), day1b.name, 'last is a relative link to the newest');
  t.equal(await fs.readFile(path.join(mnt, '10.0.0.5/mail/last/sub/file'), 'utf8'), 'hello\n', 'reads through last/');
  t.equal((await ls('10.0.0.5/mail/imap')).length, 2, 'nested source: one snapshot and last');

  const root = await fs.lstat(mnt, { bigint: true });
  t.equal(root.ino, 1n, 'the root is inode 1');
  t.equal(Number(root.mode & 0o7777n), 0o555, 'synthetic dirs are read-only');
  const snapDir = await fs.lstat(path.join(mnt, '10.0.0.5/mail', day1.name), { bigint: true });
  const srcSt = await fs.lstat(src, { bigint: true });
  t.equal(Number(snapDir.mode & 0o7777n), 0o750, 'snapshot dir mode is the source root\'s');
  t.equal(snapDir.mtimeMs, BigInt(Math.floor(Number(srcSt.mtimeNs / 1_000_000n))), 'snapshot dir mtime is the source root\'s');
  t.equal(snapDir.ctimeNs / 1_000_000n, BigInt(day1.generations[String(day1.generation)]) / 1_000_000n, 'snapshot dir ctime is its publication');
  t.equal(snapDir.nlink, 3n, 'snapshot dir link count: 2 + one subdirectory');
  const find = await runProcess('find', [mnt]);
  t.notMatch(find.stdout, /config\.json|\.pack|index/, 'nothing of the repository itself is visible');
});

t.test('read-only: every write fails with EROFS; missing paths give ENOENT', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-ro');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(path.join(src, 'dir'), { recursive: true });
  await fs.writeFile(path.join(src, 'file'), 'data\n');
  await initRepo(repo);
  await backup(repo, src, 'src');
  await fs.mkdir(mnt);
  await mountForeground(t, repo, mnt);
  const d = path.join(mnt, 'src', 'last') + '/';
  const file = path.join(d, 'file');
  const attempts: Array<[string, string[]]> = [
    ['touch', [file]],
    ['touch', [path.join(d, 'new')]],
    ['mkdir', [path.join(d, 'newdir')]],
    ['mkdir', [path.join(mnt, 'newsource')]],
    ['rm', ['-f', file]],
    ['rmdir', [path.join(d, 'dir')]],
    ['mv', [file, path.join(d, 'moved')]],
    ['chmod', ['600', file]],
    ['chown', ['1:1', file]],
    ['truncate', ['-s', '0', file]],
    ['ln', [file, path.join(d, 'hard')]],
    ['ln', ['-s', 'file', path.join(d, 'soft')]],
    ['sh', ['-c', 'echo x >> "$1"', 'sh', file]],
    ['sh', ['-c', 'echo x > "$1"', 'sh', path.join(d, 'created')]],
  ];
  for (const [cmd, args] of attempts) {
    const r = await runProcess(cmd, args, { allowFail: true });
    t.not(r.code, 0, `${cmd} ${args.join(' ')} fails`);
    t.match(r.stderr, /Read-only file system/, `${cmd} ${args.join(' ')}: EROFS`);
  }
  await t.rejects(fs.open(file, 'r+'), { code: 'EROFS' }, 'open for writing: EROFS');
  t.equal(await fs.readFile(file, 'utf8'), 'data\n', 'the file is unchanged');

  for (const p of ['nope', 'src/nope', 'src/2001-01-01', 'src/last/nope', 'src/last/dir/nope']) {
    await t.rejects(fs.lstat(path.join(mnt, p)), { code: 'ENOENT' }, `${p}: ENOENT`);
  }
  const cat = await runProcess('cat', [path.join(d, 'missing')], { allowFail: true });
  t.match(cat.stderr, /No such file or directory/, 'cat of a missing file: ENOENT');
  await t.rejects(fs.readdir(file), { code: 'ENOTDIR' }, 'listing a file: ENOTDIR');
});

t.test('df shows the repository size', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-df');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'random'), (await import('node:crypto')).randomBytes(3 * 1024 * 1024));
  await initRepo(repo);
  await backup(repo, src, 'src');
  const stats = await runSnapfs(['stats', repo, '--json']);
  await fs.mkdir(mnt);
  await mountForeground(t, repo, mnt);
  const df = await runProcess('df', ['-B1', '--output=size,used,avail', mnt]);
  const [size, used, avail] = df.stdout.trim().split('\n')[1]!.trim().split(/\s+/).map(Number);
  const expected = Math.ceil(stats.json.packBytes / 4096) * 4096;
  t.equal(size, expected, `size ${size} is the packs' size ${stats.json.packBytes}, rounded up to 4 KiB blocks`);
  t.equal(used, size, 'all of it used');
  t.equal(avail, 0, 'nothing available: read-only');
});

t.test('daemon: mount returns once ready, umount stops the server', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-daemon');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'f'), 'daemon\n');
  await initRepo(repo);
  await backup(repo, src, 'src');
  await fs.mkdir(mnt);
  let pid = 0;
  t.teardown(async () => {
    await forceUnmount(mnt);
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  const r = await runSnapfs(['mount', repo, mnt, '--json']);
  pid = r.json.mounted.pid;
  t.ok(await isMounted(mnt), 'mounted when the command returns');
  t.equal(await fs.readFile(path.join(mnt, 'src/last/f'), 'utf8'), 'daemon\n', 'served by the background process');
  const pidFile = JSON.parse(await fs.readFile(r.json.mounted.pidFile, 'utf8'));
  t.equal(pidFile.pid, pid, 'pid file in the repository run dir');
  t.equal(path.dirname(r.json.mounted.pidFile), path.join(repo, 'run'));
  t.match(r.json.mounted.options, ['ro', 'default_permissions', 'fsname=snapfs', 'subtype=snapfs']);
  t.notOk(r.json.mounted.options.includes('allow_other'), 'allow_other only on request');

  const u = await runSnapfs(['umount', mnt, '--json']);
  t.equal(u.json.unmounted, mnt);
  t.notOk(await isMounted(mnt), 'unmounted');
  const running = async () => {
    try {
      const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
      return !/^\d+ \(.*\) Z/.test(stat);
    } catch {
      return false;
    }
  };
  t.notOk(await waitFor(async () => !(await running()), 5000) && (await running()), 'the server exits after the unmount');
  t.ok(await waitFor(async () => !(await fs.access(r.json.mounted.pidFile).then(() => true, () => false)), 5000), 'the pid file is removed');
  const again = await runSnapfs(['umount', mnt], { allowFail: true });
  t.not(again.code, 0, 'umount of a directory that is not mounted fails');
  t.match(again.stderr, /not mounted/);
});

t.test('mount point errors, stale mounts, signals', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-errors');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'f'), 'x\n');
  await initRepo(repo);
  await backup(repo, src, 'src');

  const missing = await runSnapfs(['mount', repo, path.join(work, 'missing'), '--foreground'], { allowFail: true });
  t.equal(missing.code, 2, 'missing mount point: usage error');
  t.match(missing.stderr, /does not exist/);
  const full = path.join(work, 'full');
  await fs.mkdir(full);
  await fs.writeFile(path.join(full, 'x'), '');
  const notEmpty = await runSnapfs(['mount', repo, full], { allowFail: true });
  t.equal(notEmpty.code, 2, 'non-empty mount point: usage error (also in daemon mode)');
  t.match(notEmpty.stderr, /not empty/);
  const notRepo = await runSnapfs(['mount', work, full, '--foreground'], { allowFail: true });
  t.match(notRepo.stderr, /not a snapfs repository/);

  await fs.mkdir(mnt);
  const first = await mountForeground(t, repo, mnt);
  const busy = await runSnapfs(['mount', repo, mnt, '--foreground'], { allowFail: true });
  t.equal(busy.code, 2, 'mounting over a live mount fails');
  t.match(busy.stderr, /already a mount point/);

  // A server that dies leaves "Transport endpoint is not connected" behind...
  first.child.kill('SIGKILL');
  await exitCodeOf(first.child);
  await t.rejects(fs.readdir(mnt), { code: 'ENOTCONN' }, 'the dead mount is stale');
  // ...which the next mount cleans up.
  const second = await mountForeground(t, repo, mnt);
  t.equal(await fs.readFile(path.join(mnt, 'src/last/f'), 'utf8'), 'x\n', 'mounted again over the stale mount');
  t.match(second.child.output().stderr, /cleaned a stale mount/);

  second.child.kill('SIGINT');
  t.equal(await exitCodeOf(second.child), 0, 'SIGINT: clean exit');
  t.notOk(await isMounted(mnt), 'SIGINT unmounts');
  const third = await mountForeground(t, repo, mnt);
  third.child.kill('SIGTERM');
  t.equal(await exitCodeOf(third.child), 0, 'SIGTERM: clean exit');
  t.notOk(await isMounted(mnt), 'SIGTERM unmounts');
  const fourth = await mountForeground(t, repo, mnt);
  await runProcess('umount', [mnt]);
  t.equal(await exitCodeOf(fourth.child, 10_000), 0, 'an unmount by someone else ends the server');
});

