// Bad input: each case gives a clear message, its own exit code, and leaves the
// repository valid.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { XorShift32, generateSmallTree } from './helpers/tree-gen.js';
import { runProcess, runSnapfs, cliPath, tmpDir } from './helpers/cli.js';
import { assertTreesEqual } from './helpers/tree-compare.js';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { projectRoot } from '../lib/platform/native.js';

const isRoot = process.getuid?.() === 0;

async function snapshotCount(repo: string): Promise<number> {
  return (await runSnapfs(['snapshots', repo, '--json'])).json.snapshots.length;
}

/** Runs the CLI as user `nobody` (root can read everything, so permission cases need it). */
function runAsNobody(args: string[]) {
  return runProcess('runuser', ['-u', 'nobody', '--', process.execPath, cliPath(), ...args], { allowFail: true });
}

t.test('arguments and repositories', async (t) => {
  const work = await tmpDir(t, 'errors');
  const repo = path.join(work, 'repo');
  const src = path.join(work, 'src');
  await generateSmallTree(src, { files: 20, dirs: 3, seed: 5 });
  await runSnapfs(['init', repo, '--chunk-avg', '65536']);
  await runSnapfs(['backup', repo, src, '--source', 'ok']);

  const missing = await runSnapfs(['backup', repo, path.join(work, 'nope'), '--source', 'x'], { allowFail: true });
  t.equal(missing.code, 13, 'missing source dir: exit 13');
  t.match(missing.stderr, /nope/, 'the message names the path');
  t.notMatch(missing.stderr, /\n\s+at /, 'no stack trace');

  const notDir = await runSnapfs(['backup', repo, path.join(work, 'repo', 'config.json'), '--source', 'x'], { allowFail: true });
  t.equal(notDir.code, 13, 'a file as source: exit 13');

  const notRepo = await runSnapfs(['backup', src, src, '--source', 'x'], { allowFail: true });
  t.equal(notRepo.code, 10, 'not a repository: exit 10');
  t.match(notRepo.stderr, /not a snapfs repository/);

  const initTwice = await runSnapfs(['init', repo], { allowFail: true });
  t.equal(initTwice.code, 10, 'init over an existing repository is refused');

  const badSource = await runSnapfs(['backup', repo, src, '--source', '../etc'], { allowFail: true });
  t.equal(badSource.code, 2, 'invalid source name: usage error');
  const badTime = await runSnapfs(['backup', repo, src, '--source', 'x', '--time', 'yesterday'], { allowFail: true });
  t.equal(badTime.code, 2, 'invalid --time: usage error');
  t.match(badTime.stderr, /--time/);
  const unknownOption = await runSnapfs(['backup', repo, src, '--source', 'x', '--frobnicate'], { allowFail: true });
  t.equal(unknownOption.code, 2, 'unknown option: usage error');

  const noSnap = await runSnapfs(['ls', repo, 'ok@2020-01-01'], { allowFail: true });
  t.equal(noSnap.code, 14, 'unknown snapshot: exit 14');
  const noSource = await runSnapfs(['ls', repo, 'other@last'], { allowFail: true });
  t.equal(noSource.code, 14, 'unknown source: exit 14');
  const noPath = await runSnapfs(['cat', repo, 'ok@last:no/such/file'], { allowFail: true });
  t.equal(noPath.code, 14, 'unknown path: exit 14');
  t.match(noPath.stderr, /no\/such\/file/);
  t.equal(await snapshotCount(repo), 1, 'nothing was added by the failed commands');

  // A repository written by a newer snapfs is refused, not misread.
  const config = JSON.parse(await fs.readFile(path.join(repo, 'config.json'), 'utf8'));
  await fs.writeFile(path.join(repo, 'config.json'), JSON.stringify({ ...config, version: 99 }));
  const tooNew = await runSnapfs(['snapshots', repo], { allowFail: true });
  t.equal(tooNew.code, 11, 'newer format: exit 11');
  t.match(tooNew.stderr, /newer than this snapfs supports/);
  const write = await runSnapfs(['backup', repo, src, '--source', 'ok'], { allowFail: true });
  t.equal(write.code, 11, 'and no backup is written into it');
  await fs.writeFile(path.join(repo, 'config.json'), JSON.stringify(config));
  t.equal(await snapshotCount(repo), 1);
});

t.test('unreadable files and directories are reported, skipped, and the snapshot completes', { skip: !isRoot && 'needs root to switch users' }, async (t) => {
  const work = await tmpDir(t, 'errors-perm');
  await fs.chmod(work, 0o755);
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await generateSmallTree(src, { files: 30, dirs: 3, seed: 8 });
  await fs.writeFile(path.join(src, 'secret.key'), 'root only');
  await fs.chmod(path.join(src, 'secret.key'), 0o600);
  await fs.mkdir(path.join(src, 'private'));
  await fs.writeFile(path.join(src, 'private', 'x'), 'x');
  await fs.chmod(path.join(src, 'private'), 0o700);
  await runProcess('chmod', ['-R', 'a+rX', path.join(src, 'd000')]);
  await fs.mkdir(repo);
  await fs.chown(repo, 65534, 65534);
  t.equal((await runAsNobody(['init', repo, '--chunk-avg', '65536'])).code, 0);

  const res = await runAsNobody(['backup', repo, src, '--source', 'perm', '--json']);
  t.equal(res.code, 3, 'exit code 3 says "partial"');
  const out = JSON.parse(res.stdout);
  t.equal(out.snapshot.partial, true, 'the snapshot is marked partial');
  const paths = out.warnings.map((w: { path: string }) => w.path).sort();
  t.same(paths, ['private', 'secret.key'], 'both unreadable entries are reported by path');
  t.match(res.stderr, /secret\.key/, 'and named on stderr');
  t.equal(out.snapshot.stats.filesFailed, 2);

  const restoreDir = path.join(work, 'out');
  await fs.mkdir(restoreDir);
  await fs.chown(restoreDir, 65534, 65534);
  const r = await runAsNobody(['restore', repo, 'perm@last:d000', restoreDir]);
  t.equal(r.code, 0, 'the readable part restores');
  await assertTreesEqual(t, path.join(src, 'd000'), path.join(restoreDir, 'd000'), { ignore: ['uid', 'gid'] });

  const unreadableSource = await runAsNobody(['backup', repo, path.join(src, 'private'), '--source', 'p']);
  t.equal(unreadableSource.code, 13, 'an unreadable source directory: exit 13');
});

t.test('a file that changes while it is read is detected and read again next time', async (t) => {
  const work = await tmpDir(t, 'errors-changing');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(src);
  const log = path.join(src, 'growing.log');
  await fs.writeFile(log, new XorShift32(4).bytes(64 * 1024 * 1024));
  await runSnapfs(['init', repo, '--chunk-avg', '65536']);
  // Another process appends to the file continuously while the backup reads it.
  const writer = spawn(process.execPath, ['-e', `const fs=require('fs');const fd=fs.openSync(${JSON.stringify(log)},'a');setInterval(()=>fs.writeSync(fd,'line\\n'),1)`]);
  t.teardown(() => void writer.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 200));
  const res = await runSnapfs(['backup', repo, src, '--source', 'logs', '--json']);
  writer.kill('SIGKILL');
  await new Promise((r) => writer.once('exit', r));
  t.equal(res.code, 0, 'the backup completes');
  t.match(res.json.warnings.map((w: { message: string }) => w.message).join('\n'), /changed while it was read/, 'the change is reported');
  // What was stored is a consistent prefix: it reads back fully, and it is what the file held.
  const stored = path.join(work, 'out');
  await runSnapfs(['restore', repo, 'logs@last', stored]);
  const got = await fs.readFile(path.join(stored, 'growing.log'));
  const now = await fs.readFile(log);
  t.ok(got.length >= 64 * 1024 * 1024 && now.subarray(0, got.length).equals(got), 'stored content is a prefix of the file as written');
  const next = await runSnapfs(['backup', repo, src, '--source', 'logs', '--json']);
  t.equal(next.json.snapshot.stats.filesOpened, 1, 'the next backup reads it again');
  t.same(next.json.warnings, [], 'and, now stable, without warning');
});

/**
 * A repository and a source with a 64 MiB file (so that a command on it lasts), and the
 * NODE_OPTIONS that preload test/fixtures/exit-when-locked (an exit(0) midway).
 */
async function earlyExitSetup(t: any, name: string, seed: number): Promise<{ work: string; repo: string; src: string; preload: string }> {
  const work = await tmpDir(t, name);
  const repo = path.join(work, 'repo');
  const src = path.join(work, 'src');
  await generateSmallTree(src, { files: 200, dirs: 8, seed });
  await fs.writeFile(path.join(src, 'big.bin'), new XorShift32(seed * 2).bytes(64 * 1024 * 1024));
  await runSnapfs(['init', repo]);
  const fixture = pathToFileURL(path.join(projectRoot(), 'dist', 'test', 'fixtures', 'exit-when-locked.js')).href;
  return { work, repo, src, preload: `--import=${fixture}` };
}

t.test('a backup whose process ends before it finished does not exit 0', async (t) => {
  const { repo, src, preload } = await earlyExitSetup(t, 'errors-early-exit', 4);
  const env = { NODE_OPTIONS: preload, SNAPFS_TEST_EXIT_WHEN_LOCKED: path.join(repo, 'lock') };
  for (const command of [['backup', repo, src, '--source', 's'], ['backup', repo, src, '--source', 's', '--json']]) {
    const r = await runSnapfs(command, { env, allowFail: true });
    t.equal(r.code, 1, `${command.join(' ')}: exit 1, not 0`, { stdout: r.stdout, stderr: r.stderr });
    t.match(r.stderr, /internal error: the process ended before the backup finished/, 'and says why');
  }
  t.equal(await snapshotCount(repo), 0, 'no snapshot was made');
  const after = await runSnapfs(['backup', repo, src, '--source', 's']);
  t.equal(after.code, 0, 'without the early exit the same backup succeeds');
});

t.test('a restore (any command) whose process ends before it finished does not exit 0', async (t) => {
  // The guard of cli/completion.ts is armed for every command once its arguments are
  // parsed: a restore cut short must not read as a complete one.
  const { work, repo, src, preload } = await earlyExitSetup(t, 'errors-early-exit-restore', 5);
  await runSnapfs(['backup', repo, src, '--source', 's']);
  const target = path.join(work, 'out');
  const env = { NODE_OPTIONS: preload, SNAPFS_TEST_EXIT_WHEN_EXISTS: target };
  const r = await runSnapfs(['restore', repo, 's@last', target], { env, allowFail: true });
  t.equal(r.code, 1, 'exit 1, not 0', { stdout: r.stdout, stderr: r.stderr });
  t.match(r.stderr, /internal error: the process ended before 'snapfs restore' finished/, 'and says why');
  for (const args of [['--help'], ['--version'], ['restore', '--help']]) {
    const h = await runSnapfs(args, { env });
    t.equal(h.code, 0, `${args.join(' ')}: still exit 0 (nothing was armed)`);
  }
  const again = path.join(work, 'again');
  t.equal((await runSnapfs(['restore', repo, 's@last', again])).code, 0, 'without the early exit the same restore succeeds');
  t.ok((await fs.readFile(path.join(again, 'big.bin'))).equals(await fs.readFile(path.join(src, 'big.bin'))), 'and restores the big file whole');
});

t.test('disk full: clean abort, repository still valid, next backup succeeds', { skip: !isRoot && 'needs root to mount a tmpfs' }, async (t) => {
  const work = await tmpDir(t, 'errors-enospc');
  const small = path.join(work, 'small-fs');
  await fs.mkdir(small);
  await runProcess('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', small]);
  t.teardown(() => runProcess('umount', ['-l', small], { allowFail: true }));
  const repo = path.join(small, 'repo');
  const src = path.join(work, 'src');
  await generateSmallTree(src, { files: 50, dirs: 4, seed: 9 });
  await runSnapfs(['init', repo, '--chunk-avg', '65536', '--pack-size', '1048576']);
  const first = await runSnapfs(['backup', repo, src, '--source', 's', '--json']);
  const firstId = first.json.snapshot.id;
  const day1 = path.join(work, 'src-day1');
  await runProcess('cp', ['-a', src, day1]);

  await fs.writeFile(path.join(src, 'huge.bin'), new XorShift32(6).bytes(40 * 1024 * 1024));
  const full = await runSnapfs(['backup', repo, src, '--source', 's'], { allowFail: true });
  // Its output goes with a failure: a run on CI once exited 0, printing nothing on stderr
  // and committing no snapshot (not reproduced since; see docs/reliability.md).
  t.equal(full.code, 16, 'disk full: exit 16', { stdout: full.stdout.slice(-3000), stderr: full.stderr.slice(-3000), signal: full.signal });
  t.match(full.stderr, /no space left on device/i, 'a clear ENOSPC message');
  t.notMatch(full.stderr, /internal error/);
  t.equal(await snapshotCount(repo), 1, 'the failed snapshot does not exist');

  await runProcess('mount', ['-o', 'remount,size=96m', small]);
  const after = await runSnapfs(['backup', repo, src, '--source', 's', '--json']);
  t.equal(after.code, 0, 'with space again, the next backup succeeds');
  const out1 = path.join(work, 'out-first');
  await runSnapfs(['restore', repo, `s@${firstId}`, out1]);
  await assertTreesEqual(t, day1, out1);
  const out2 = path.join(work, 'out-second');
  await runSnapfs(['restore', repo, 's@last', out2]);
  await assertTreesEqual(t, src, out2);
});
