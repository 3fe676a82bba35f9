// snapfs run --config: one nightly job through the real CLI.

import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { runSnapfs, tmpDir } from './helpers/cli.js';
import { XorShift32, generateSmallTree } from './helpers/tree-gen.js';
import { projectRoot } from '../lib/platform/native.js';
import { initRepo } from './helpers/history.js';

function parseEnv(text: string): Record<string, string> {
  return Object.fromEntries(text.trim().split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

t.test('one source missing: the other is backed up, retention, prune and the command still run', async (t) => {
  const base = await tmpDir(t, 'snapfs-run');
  const repo = join(base, 'repo');
  await initRepo(repo);
  await generateSmallTree(join(base, 'good'), { files: 40, dirs: 3, seed: 1 });
  await fsp.writeFile(join(base, 'good', 'junk.skip'), 'not wanted');
  // Two older snapshots for retention to drop.
  for (const time of ['2026-01-01T10:00:00Z', '2026-01-02T10:00:00Z']) {
    await runSnapfs(['backup', repo, join(base, 'good'), '--source', 'good', '--time', time]);
  }
  const envFile = join(base, 'post-env.txt');
  const config = {
    repository: 'repo',
    sources: [
      { name: 'good', path: 'good', excludes: ['*.skip'] },
      { name: 'bad', path: 'no-such-dir' },
      { name: 'off', path: 'good', enabled: false },
    ],
    retention: { keepLast: 1 },
    prune: true,
    postBackupCommand: `env | grep '^SNAPFS_' > '${envFile}'; echo post-backup ran >&2`,
  };
  const configFile = join(base, 'snapfs.json');
  await fsp.writeFile(configFile, JSON.stringify(config, null, 2));

  const r = await runSnapfs(['run', '--config', configFile], { allowFail: true });
  t.equal(r.code, 1, 'non-zero exit: a source failed');
  t.match(r.stdout, /: PARTIAL in /);
  t.match(r.stdout, /\n {2}bad: FAILED: source directory .*no-such-dir/);
  t.match(r.stdout, /\n {2}good: snapshot good@\d{4}-\d\d-\d\d/);
  t.match(r.stdout, /\n {2}off: disabled/);
  t.match(r.stdout, /\n {2}retention: 1 kept, 2 removed/);
  t.match(r.stdout, /\n {2}prune: 1 snapshots reach/);
  t.match(r.stdout, /1 failure\(s\):\n {2}- backup of bad: /);
  t.match(r.stderr, /post-backup ran/, "the command's output goes to stderr");

  const env = parseEnv(await fsp.readFile(envFile, 'utf8'));
  const snaps = await runSnapfs(['snapshots', repo, '--json']);
  t.equal(snaps.json.snapshots.length, 1, 'retention kept only the new snapshot');
  const kept = snaps.json.snapshots[0];
  t.same(env, {
    SNAPFS_REPOSITORY: repo,
    SNAPFS_STATUS: 'partial',
    SNAPFS_SNAPSHOTS: `good@${kept.name}`,
    SNAPFS_FAILED: 'bad',
  }, 'the post-backup command sees the outcome in its environment');
  t.same(kept.excludes, ['*.skip']);

  const out = join(base, 'out');
  await runSnapfs(['restore', repo, `good@${kept.name}`, out]);
  await t.rejects(fsp.access(join(out, 'junk.skip')), 'excludes applied');
  t.equal((await runSnapfs(['check', repo, '--read-data', '--json'])).json.ok, true);

  // --json: the summary document, and nothing else on stdout.
  const j = await runSnapfs(['run', '--config', configFile, '--json'], { allowFail: true });
  t.equal(j.code, 1);
  t.equal(j.json.status, 'partial');
  t.same(j.json.sources.map((s: any) => [s.source, s.status]), [['good', 'ok'], ['bad', 'failed'], ['off', 'disabled']]);
  t.equal(j.json.sources[1].error.code, 'SOURCE_UNREADABLE');
  t.equal(j.json.retention.status, 'ok');
  t.equal(j.json.prune.status, 'ok');
  t.equal(j.json.postBackupCommand.exitCode, 0);
  t.equal(j.json.failures.length, 1);
});

t.test('all sources fine: status ok, exit 0; a failing post-backup command fails the run', async (t) => {
  const base = await tmpDir(t, 'snapfs-run-ok');
  const repo = join(base, 'repo');
  await initRepo(repo);
  await generateSmallTree(join(base, 'a'), { files: 10, dirs: 2, seed: 2 });
  const envFile = join(base, 'env.txt');
  const configFile = join(base, 'job.json');
  const write = (cmd: string) =>
    fsp.writeFile(configFile, JSON.stringify({ repository: repo, sources: [{ name: 'a', path: join(base, 'a') }], postBackupCommand: cmd }));
  await write(`echo "$SNAPFS_STATUS $SNAPFS_SNAPSHOTS" > '${envFile}'`);
  const r = await runSnapfs(['run', '--config', configFile, '--json']);
  t.equal(r.json.status, 'ok');
  t.equal(r.json.retention.status, 'skipped');
  t.match(await fsp.readFile(envFile, 'utf8'), /^ok a@\d{4}-\d\d-\d\d\n$/);

  await write('exit 7');
  const f = await runSnapfs(['run', '--config', configFile], { allowFail: true });
  t.equal(f.code, 1);
  t.match(f.stdout, /post-backup command exited with 7/);
});

t.test('a run whose process ends before it reported does not exit 0', async (t) => {
  const base = await tmpDir(t, 'snapfs-run-early-exit');
  const repo = join(base, 'repo');
  await initRepo(repo);
  await generateSmallTree(join(base, 'a'), { files: 50, dirs: 2, seed: 5 });
  await fsp.writeFile(join(base, 'a', 'big.bin'), new XorShift32(9).bytes(64 * 1024 * 1024));
  const configFile = join(base, 'job.json');
  await fsp.writeFile(configFile, JSON.stringify({ repository: repo, sources: [{ name: 'a', path: join(base, 'a') }] }));
  // The preload ends the process with exit(0) once its backup holds the writer lock.
  const preload = pathToFileURL(join(projectRoot(), 'dist', 'test', 'fixtures', 'exit-when-locked.js')).href;
  const env = { NODE_OPTIONS: `--import=${preload}`, SNAPFS_TEST_EXIT_WHEN_LOCKED: join(repo, 'lock') };
  const r = await runSnapfs(['run', '--config', configFile], { env, allowFail: true });
  t.equal(r.code, 1, 'exit 1, not 0', { stdout: r.stdout, stderr: r.stderr });
  t.match(r.stderr, /internal error: the process ended before the nightly run finished \(last status: backing up a from /, 'and says where it was');
  const snaps = await runSnapfs(['snapshots', repo, '--json']);
  t.equal(snaps.json.snapshots.length, 0, 'no snapshot was made');
  const ok = await runSnapfs(['run', '--config', configFile, '--json']);
  t.equal(ok.json.status, 'ok', 'without the early exit the same run succeeds');
});

t.test('config mistakes are reported before anything runs', async (t) => {
  const base = await tmpDir(t, 'snapfs-run-bad');
  const file = join(base, 'c.json');
  const cases: Array<[unknown, RegExp]> = [
    [{ repository: 'r', sources: [] }, /'sources' must be a non-empty list/],
    [{ repository: 'r', sources: [{ name: 'a', path: 'p' }], retention: { keepdaily: 3 } }, /retention: unknown key 'keepdaily'/],
    [{ repository: 'r', sources: [{ name: 'a', path: 'p' }, { name: 'a', path: 'q' }] }, /listed twice/],
    [{ repository: 'r', sources: [{ name: 'last', path: 'p' }] }, /invalid source name/],
  ];
  for (const [config, message] of cases) {
    await fsp.writeFile(file, JSON.stringify(config));
    const r = await runSnapfs(['run', '--config', file], { allowFail: true });
    t.equal(r.code, 2);
    t.match(r.stderr, message);
  }
  await fsp.writeFile(join(base, 'c.yaml'), 'repository: r\n');
  const y = await runSnapfs(['run', '--config', join(base, 'c.yaml')], { allowFail: true });
  t.match(y.stderr, /YAML is not supported; write the config as JSON/);
});
