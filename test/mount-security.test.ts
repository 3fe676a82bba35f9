// Who may read what through the mount (the kernel enforces each file's stored mode, uid
// and gid; other users get in only with --allow-other), and what a damaged pack does:
// EIO for the file that needs the damaged bytes, never wrong bytes, and nothing else hurt.
import t from 'tap';
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { isRoot } from './helpers/tree-gen.js';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground } from './helpers/mount.js';
import { flipStoredByte } from './helpers/damage.js';

const skip = !(await fuseAvailable()) ? 'needs /dev/fuse' : !isRoot ? 'needs root (creates a user)' : false;

t.test('another user: stored permissions apply with --allow-other, no access without it', { skip }, async (t) => {
  const user = `snapfs-t${process.pid}`.slice(0, 30);
  await runProcess('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user]);
  t.teardown(() => runProcess('userdel', [user], { allowFail: true }).then(() => undefined));
  const uid = Number((await runProcess('id', ['-u', user])).stdout.trim());
  const as = (cmd: string, ...args: string[]) => runProcess('runuser', ['-u', user, '--', cmd, ...args], { allowFail: true });

  const work = await tmpDir(t, 'mount-users');
  await fs.chmod(work, 0o755); // the user must reach the mount point
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(path.join(src, 'private-dir'), { recursive: true });
  await fs.writeFile(path.join(src, 'secret'), 'root only\n', { mode: 0o600 });
  await fs.writeFile(path.join(src, 'public'), 'everyone\n', { mode: 0o644 });
  await fs.writeFile(path.join(src, 'mine'), 'the user\'s own\n', { mode: 0o600 });
  await fs.writeFile(path.join(src, 'private-dir', 'inside'), 'hidden by its dir\n', { mode: 0o644 });
  await fs.chown(path.join(src, 'mine'), uid, 0);
  await fs.chmod(path.join(src, 'secret'), 0o600);
  await fs.chmod(path.join(src, 'public'), 0o644);
  await fs.chmod(path.join(src, 'private-dir'), 0o700);
  await fs.chmod(src, 0o755);
  await initRepo(repo);
  await backup(repo, src, 'src');
  await fs.mkdir(mnt);

  const open = await mountForeground(t, repo, mnt, ['--allow-other']);
  t.ok(open.info.options.includes('allow_other'), 'allow_other with --allow-other');
  const d = path.join(mnt, 'src', 'last');
  const pub = await as('cat', path.join(d, 'public'));
  t.equal(pub.code, 0, `a 0644 file of root is readable: ${pub.stderr}`);
  t.equal(pub.stdout, 'everyone\n');
  const secret = await as('cat', path.join(d, 'secret'));
  t.not(secret.code, 0, 'a 0600 file of root is not');
  t.match(secret.stderr, /Permission denied/);
  const mine = await as('cat', path.join(d, 'mine'));
  t.equal(mine.stdout, 'the user\'s own\n', 'a 0600 file of the user is');
  const inside = await as('cat', path.join(d, 'private-dir', 'inside'));
  t.match(inside.stderr, /Permission denied/, 'a 0700 directory of root cannot be entered');
  const ls = await as('ls', d + '/');
  t.equal(ls.code, 0, 'the snapshot can be listed');
  const write = await as('touch', path.join(d, 'public'));
  t.not(write.code, 0, 'writing still fails');
  await open.stop();

  const closed = await mountForeground(t, repo, mnt);
  t.notOk(closed.info.options.includes('allow_other'), 'no allow_other by default');
  const denied = await as('ls', mnt);
  t.not(denied.code, 0, 'without --allow-other another user cannot even list the mount');
  t.match(denied.stderr, /Permission denied/);
  const denied2 = await as('cat', path.join(d, 'public'));
  t.not(denied2.code, 0, 'nor read a 0644 file');
  t.equal(await fs.readFile(path.join(d, 'public'), 'utf8'), 'everyone\n', 'the mounting user (root) still can');
});

t.test('a flipped byte in a pack: EIO for that file, the rest reads fine', { skip: !(await fuseAvailable()) && 'needs /dev/fuse' }, async (t) => {
  const work = await tmpDir(t, 'mount-corrupt');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(src);
  const victim = randomBytes(300_000);
  const other = randomBytes(100_000);
  await fs.writeFile(path.join(src, 'victim'), victim);
  await fs.writeFile(path.join(src, 'other'), other);
  await fs.writeFile(path.join(src, 'small'), 'small and fine\n');
  await initRepo(repo);
  await backup(repo, src, 'src');

  await flipStoredByte(repo, 'src', 'victim');

  await fs.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt);
  const d = path.join(mnt, 'src', 'last');
  const out = path.join(work, 'victim.out');
  const cat = await runProcess('sh', ['-c', 'cat "$1" > "$2"', 'sh', path.join(d, 'victim'), out], { allowFail: true });
  t.not(cat.code, 0, 'reading the damaged file fails');
  t.match(cat.stderr, /Input\/output error/, 'with EIO');
  const got = await fs.readFile(out);
  t.ok(got.length < victim.length && got.equals(victim.subarray(0, got.length)), `what came through (${got.length} bytes) is a correct prefix, not wrong bytes`);
  const ok = await runProcess('sh', ['-c', 'cat "$1" | od -An -tx1 | tr -d " \\n"', 'sh', path.join(d, 'other')]);
  t.equal(ok.stdout, other.toString('hex'), 'another file reads fine');
  t.equal(await fs.readFile(path.join(d, 'small'), 'utf8'), 'small and fine\n', 'and a small one');
  t.same((await fs.readdir(d)).sort(), ['other', 'small', 'victim'], 'listing still works');
  t.match(m.child.output().stderr, /victim|content does not match|CORRUPT|corrupt|blob/i, 'the server logs the damage');
});
