// Source trouble during a backup: files that vanish, grow, shrink or are replaced while they
// are read, directories replaced by files mid-walk, permission-denied files and directories
// (as user nobody), and a tmpfs mounted inside the source with --one-file-system. Backups end
// cleanly, every snapshot passes check --read-data, and every file stored holds a state the
// source file really had; once the source is quiet, the next backup is exact.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { childEnv, cliPath, runProcess, tmpDir } from './helpers/cli.js';
import { initRepo } from './helpers/history.js';
import { assertClean, contentManifest, restoreHonestly, snapfs } from './helpers/fault.js';
import { ChurnLog, verifyRestored } from './helpers/churn.js';
import { assertTreesEqual } from './helpers/tree-compare.js';
import { generateSmallTree, isRoot } from './helpers/tree-gen.js';

const CHURN_SECONDS = Number(process.env.SNAPFS_CHURN_SECONDS ?? 20);

t.test('files and directories changing under a running backup', async (t) => {
  const base = await tmpDir(t, 'fault-churn');
  const src = join(base, 'src');
  const repo = join(base, 'repo');
  await initRepo(repo);
  const churn = spawn(process.execPath, [fileURLToPath(new URL('./helpers/churn.js', import.meta.url)), src, String(CHURN_SECONDS)], { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void churn.kill('SIGKILL'));
  let said = '';
  const saw = (word: string): Promise<void> => new Promise((resolve) => {
    const check = (): void => (said.includes(word) ? resolve() : undefined);
    churn.stdout!.on('data', (b: Buffer) => { said += b.toString(); check(); });
    check();
  });
  const exited = new Promise<number | null>((resolve) => churn.on('exit', resolve));
  await saw('ready');

  const snaps: Array<{ id: string; name: string; unstable: Set<string> }> = [];
  let running = true;
  void saw('done').then(() => (running = false));
  let n = 0;
  while (running) {
    const r = await snapfs(['backup', repo, src, '--source', 'churn', '--time', new Date(Date.UTC(2026, 0, 1, 0, 0, n++)).toISOString(), '--json']);
    assertClean(t, r, `backup ${n} under churn`, [0]);
    if (r.code !== 0) continue;
    const unstable = new Set<string>((r.json.warnings as Array<{ path: string; message: string }>).filter((w) => /changed while/.test(w.message)).map((w) => w.path));
    snaps.push({ id: r.json.snapshot.id, name: r.json.snapshot.name, unstable });
  }
  t.equal(await exited, 0, 'the churn process finished');
  const log = JSON.parse(await fsp.readFile(`${src}.json`, 'utf8')) as ChurnLog;
  t.comment(`${snaps.length} backups during ${log.operations} rounds of changes`);
  t.ok(snaps.length >= 3, 'several backups ran while the tree changed');

  const check = await snapfs(['check', repo, '--read-data', '--json']);
  assertClean(t, check, 'check --read-data', [0]);
  for (const s of snaps) {
    const out = join(base, `out-${s.name}`);
    const r = await snapfs(['restore', repo, `churn@${s.id}`, out]);
    assertClean(t, r, `restore ${s.name}`, [0]);
    t.same(await verifyRestored(out, log, s.unstable), [], `churn@${s.name}: every file holds a state its source had`);
    await fsp.rm(out, { recursive: true, force: true });
  }

  // Quiet again: the next backup is exact.
  const last = await snapfs(['backup', repo, src, '--source', 'churn', '--json']);
  assertClean(t, last, 'backup of the quiet tree', [0]);
  t.same(last.json?.warnings, [], 'no warnings once nothing changes');
  await fsp.rm(`${src}.json`);
  t.equal(await restoreHonestly(t, repo, 'churn@last', await contentManifest(src), join(base, 'out-final')), 0, 'the quiet tree restores byte-identical');
});

/**
 * The CLI as user nobody. `env -u NODE_OPTIONS`: tap's process-info hook re-adds itself to
 * the environment of every child it sees spawned, and as nobody it cannot write its report.
 */
function asNobody(args: string[]) {
  return runProcess('runuser', ['-u', 'nobody', '--', 'env', '-u', 'NODE_OPTIONS', process.execPath, cliPath(), ...args], { allowFail: true });
}

t.test('permission-denied files and directories, as user nobody', { skip: !isRoot && 'needs root to switch users' }, async (t) => {
  const base = await tmpDir(t, 'fault-perm');
  await fsp.chmod(base, 0o755);
  const src = join(base, 'src');
  const repo = join(base, 'repo');
  await generateSmallTree(src, { files: 40, dirs: 4, seed: 12 });
  await runProcess('chmod', ['-R', 'a+rX', src]);
  // Every way to be refused: a file without read, a directory without read (x only), one
  // without search (r only: names but no lstat), one with neither, deep inside the tree.
  await fsp.writeFile(join(src, 'd000', 'noread.txt'), 'secret');
  await fsp.chmod(join(src, 'd000', 'noread.txt'), 0o200);
  for (const [dir, mode] of [['x-only', 0o311], ['r-only', 0o644], ['none', 0o000]] as const) {
    const d = join(src, 'd000', dir);
    await fsp.mkdir(d);
    await fsp.writeFile(join(d, 'inside'), `inside ${dir}`);
    await fsp.chmod(join(d, 'inside'), 0o644);
    await fsp.chmod(d, mode);
  }
  await fsp.mkdir(repo);
  await fsp.chown(repo, 65534, 65534);
  t.equal((await asNobody(['init', repo, '--chunk-avg', '65536'])).code, 0);

  const r = await asNobody(['backup', repo, src, '--source', 'perm', '--json']);
  assertClean(t, r, 'backup as nobody', [3]);
  const out = JSON.parse(r.stdout);
  const warned = (out.warnings as Array<{ path: string }>).map((w) => w.path).sort();
  t.same(warned, ['d000/noread.txt', 'd000/none', 'd000/r-only/inside', 'd000/x-only'].sort(), 'each refused entry is named, nothing else');
  t.equal(out.snapshot.partial, true, 'the snapshot says it is partial');
  for (const w of warned) t.match(r.stderr, new RegExp(w.replace(/[/.]/g, '\\$&')), `${w} is named on stderr`);

  // What could be read is stored exactly; what could not is absent, not empty.
  const restored = join(base, 'out');
  await fsp.mkdir(restored);
  await fsp.chown(restored, 65534, 65534);
  const rr = await asNobody(['restore', repo, 'perm@last', restored]);
  assertClean(t, rr, 'restore as nobody', [0]);
  await fsp.access(join(restored, 'd000', 'noread.txt')).then(() => t.fail('unreadable file restored'), () => t.pass('the unreadable file is absent'));
  await fsp.access(join(restored, 'd000', 'r-only', 'inside')).then(() => t.fail('unstattable file restored'), () => t.pass('the file that could not be lstat()ed is absent'));
  const chk = await asNobody(['check', repo, '--read-data']);
  assertClean(t, chk, 'check as nobody', [0]);

  // Permissions fixed: the next backup stores everything, without warnings.
  await runProcess('chmod', ['-R', 'a+rX', src]);
  const fixed = await asNobody(['backup', repo, src, '--source', 'perm', '--json']);
  assertClean(t, fixed, 'backup after fixing permissions', [0]);
  t.same(JSON.parse(fixed.stdout).warnings, [], 'no warnings');
  const again = join(base, 'out2');
  await fsp.mkdir(again);
  await fsp.chown(again, 65534, 65534);
  assertClean(t, await asNobody(['restore', repo, 'perm@last', again]), 'restore', [0]);
  await assertTreesEqual(t, src, again, { ignore: ['uid', 'gid', 'atime'] });
});

t.test('--one-file-system with a tmpfs mounted inside the source', { skip: !isRoot && 'needs root to mount a tmpfs' }, async (t) => {
  const base = await tmpDir(t, 'fault-onefs');
  const src = join(base, 'src');
  const repo = join(base, 'repo');
  await generateSmallTree(src, { files: 20, dirs: 2, seed: 13 });
  const mnt = join(src, 'd000', 'mnt');
  await fsp.mkdir(mnt);
  await runProcess('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
  t.teardown(() => runProcess('umount', ['-l', mnt], { allowFail: true }));
  await fsp.writeFile(join(mnt, 'other-fs.txt'), 'on the tmpfs');
  await fsp.mkdir(join(mnt, 'sub'));
  await fsp.writeFile(join(mnt, 'sub', 'deep.txt'), 'deeper on the tmpfs');
  await initRepo(repo);

  const one = await snapfs(['backup', repo, src, '--source', 'one', '--one-file-system', '--json']);
  assertClean(t, one, 'backup --one-file-system', [0]);
  const ls = await snapfs(['ls', repo, 'one@last:d000/mnt', '--json']);
  assertClean(t, ls, 'ls of the mount point', [0]);
  t.same(ls.json?.entries, [], 'the mount point is stored as an empty directory');
  const all = await snapfs(['backup', repo, src, '--source', 'all', '--json']);
  assertClean(t, all, 'backup without --one-file-system', [0]);
  const out = join(base, 'out');
  assertClean(t, await snapfs(['restore', repo, 'all@last', out]), 'restore', [0]);
  t.equal(await fsp.readFile(join(out, 'd000', 'mnt', 'sub', 'deep.txt'), 'utf8'), 'deeper on the tmpfs', 'without the option the tmpfs is crossed');
  const outOne = join(base, 'out-one');
  assertClean(t, await snapfs(['restore', repo, 'one@last', outOne]), 'restore --one-file-system snapshot', [0]);
  t.same(await fsp.readdir(join(outOne, 'd000', 'mnt')), [], 'restored as an empty directory');
  // Everything else is the same in both.
  await fsp.rm(join(out, 'd000', 'mnt'), { recursive: true });
  await fsp.rm(join(outOne, 'd000', 'mnt'), { recursive: true });
  await assertTreesEqual(t, out, outOne, { ignore: ['dirMtime'] });
});
