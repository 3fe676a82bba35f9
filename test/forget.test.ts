// Retention through the real CLI: snapshots over 90 days with gaps and several per day,
// and the expected survivors worked out by hand (below), not by the code under test.

import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { runSnapfs, tmpDir } from './helpers/cli.js';

const UTC = { TZ: 'UTC' };

async function repoWithSnapshots(t: any, times: string[], env: Record<string, string>): Promise<string> {
  const base = await tmpDir(t, 'snapfs-forget');
  const src = join(base, 'src');
  await fsp.mkdir(src);
  await fsp.writeFile(join(src, 'file'), 'tiny tree\n');
  const repo = join(base, 'repo');
  await runSnapfs(['init', repo, '--chunk-avg', '65536', '--pack-size', '1048576'], { env });
  for (const time of times) await runSnapfs(['backup', repo, src, '--source', 'mail', '--time', time], { env });
  return repo;
}

async function names(repo: string, env: Record<string, string>): Promise<string[]> {
  const r = await runSnapfs(['snapshots', repo, '--json'], { env });
  return r.json.snapshots.map((s: { name: string }) => s.name);
}

t.test('daily, weekly and monthly rules keep exactly the expected snapshots', async (t) => {
  // 2026-01-01 is a Thursday, so 2026-03-01 is a Sunday and ISO weeks start on
  // Mondays Mar 2, 9, 16, 23, 30.
  const times = [
    '2026-01-01T10:00:00Z', '2026-01-03T10:00:00Z', '2026-01-05T10:00:00Z', '2026-01-05T18:00:00Z',
    '2026-01-12T10:00:00Z', '2026-01-20T10:00:00Z', '2026-01-28T10:00:00Z',
    '2026-02-02T10:00:00Z', '2026-02-10T10:00:00Z', '2026-02-17T10:00:00Z', '2026-02-25T10:00:00Z',
    // nothing from Feb 26 to Mar 14
    '2026-03-15T10:00:00Z', '2026-03-22T10:00:00Z', '2026-03-23T09:00:00Z', '2026-03-23T21:00:00Z',
    '2026-03-24T10:00:00Z', '2026-03-26T10:00:00Z', '2026-03-27T10:00:00Z',
    '2026-03-28T08:00:00Z', '2026-03-28T12:00:00Z', '2026-03-28T20:00:00Z',
    '2026-03-29T10:00:00Z', '2026-03-30T10:00:00Z', '2026-03-31T10:00:00Z',
  ];
  const repo = await repoWithSnapshots(t, times, UTC);
  const all = await names(repo, UTC);
  t.equal(all.length, times.length);
  t.ok(all.includes('2026-03-28_3') && all.includes('2026-01-05_2'), 'repeats of a day are named _2, _3');

  // daily 7: the 7 most recent days that have snapshots, newest of each day:
  //   03-31, 03-30, 03-29, 03-28 (the 20:00 one, named 2026-03-28_3), 03-27, 03-26, 03-24
  // weekly 4: newest of ISO weeks Mar 30-Apr 5 (03-31), Mar 23-29 (03-29),
  //   Mar 16-22 (03-22, a Sunday), Mar 9-15 (03-15, a Sunday)
  // monthly 6: only three months have snapshots: 03-31, 02-25, 01-28
  const expected = [
    '2026-01-28', '2026-02-25', '2026-03-15', '2026-03-22', '2026-03-24', '2026-03-26',
    '2026-03-27', '2026-03-28_3', '2026-03-29', '2026-03-30', '2026-03-31',
  ];
  const args = ['forget', repo, '--keep-daily', '7', '--keep-weekly', '4', '--keep-monthly', '6', '--json'];

  const dry = await runSnapfs([...args, '--dry-run'], { env: UTC });
  t.equal(dry.json.dryRun, true);
  t.same(dry.json.snapshots.filter((s: any) => s.action === 'keep').map((s: any) => s.name), expected, 'dry run plans the expected set');
  t.same(await names(repo, UTC), all, '--dry-run changes nothing');

  const real = await runSnapfs(args, { env: UTC });
  t.equal(real.json.kept, expected.length);
  t.equal(real.json.removed, times.length - expected.length);
  t.same(await names(repo, UTC), expected, 'exactly the expected snapshots remain');

  const reasons = Object.fromEntries(real.json.snapshots.map((s: any) => [s.name, s.reasons]));
  t.same(reasons['2026-03-31'], ['daily 2026-03-31', 'weekly 2026-W14', 'monthly 2026-03']);
  t.same(reasons['2026-03-22'], ['weekly 2026-W12']);
  t.same(reasons['2026-02-25'], ['monthly 2026-02']);
  t.same(reasons['2026-03-23_2'], []);

  const human = await runSnapfs(['forget', repo, '--keep-daily', '7', '--keep-weekly', '4', '--keep-monthly', '6'], { env: UTC });
  t.match(human.stdout, /keep +mail@2026-03-22 .*\(weekly 2026-W12\)/);
  t.match(human.stdout, /11 kept, 0 removed/);
});

t.test('days are local calendar days', async (t) => {
  // 20:00 UTC on Mar 28 and 02:00 UTC on Mar 29 are both Mar 28 in New York (UTC-4 then).
  const env = { TZ: 'America/New_York' };
  const repo = await repoWithSnapshots(t, ['2026-03-27T15:00:00Z', '2026-03-28T20:00:00Z', '2026-03-29T02:00:00Z'], env);
  t.same(await names(repo, env), ['2026-03-27', '2026-03-28', '2026-03-28_2']);
  await runSnapfs(['forget', repo, '--keep-daily', '2'], { env });
  t.same(await names(repo, env), ['2026-03-27', '2026-03-28_2'], 'one per local day, the newest');
});

t.test('a policy that keeps nothing is refused', async (t) => {
  const repo = await repoWithSnapshots(t, ['2026-03-27T15:00:00Z'], UTC);
  const r = await runSnapfs(['forget', repo, '--keep-daily', '0'], { env: UTC, allowFail: true });
  t.equal(r.code, 2);
  t.match(r.stderr, /keeps nothing/);
  t.same(await names(repo, UTC), ['2026-03-27']);
});
