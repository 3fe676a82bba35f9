// Disaster recovery: snapfs restore REPO --all-sources @DATE TARGET.

import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { runSnapfs, tmpDir } from './helpers/cli.js';
import { assertTreesEqual } from './helpers/tree-compare.js';
import { buildHistory } from './helpers/history.js';

t.test('every source of a date, or the newest before it', async (t) => {
  const base = await tmpDir(t, 'snapfs-dr');
  const env = { TZ: 'UTC' };
  // mail: Jan 1, Jan 2; db/pg: Jan 2, Jan 3 (one repository).
  const mail = await buildHistory(base, { backups: 2, files: 60, bigFiles: 2, seed: 21, source: 'mail', keepStates: true, firstDay: '2026-01-01' });
  const db = await buildHistory(base, { backups: 2, files: 30, bigFiles: 2, seed: 22, source: 'db/pg', keepStates: true, firstDay: '2026-01-02' });
  const repo = mail.repo;

  const target = join(base, 'dr-0102');
  const r = await runSnapfs(['restore', repo, '--all-sources', '@2026-01-02', target], { env });
  t.match(r.stdout, /restored mail@2026-01-02: \d+ files/);
  t.match(r.stdout, /restored db\/pg@2026-01-02: \d+ files/);
  await assertTreesEqual(t, mail.snapshots[1]!.state!, join(target, 'mail'), undefined, 'mail@2026-01-02 identical');
  await assertTreesEqual(t, db.snapshots[0]!.state!, join(target, 'db', 'pg'), undefined, 'db/pg@2026-01-02 identical');

  const early = join(base, 'dr-0101');
  const e = await runSnapfs(['restore', repo, '--all-sources', '@2026-01-01', early, '--json'], { env });
  t.same(e.json.sources.map((s: any) => [s.source, s.status, s.snapshot?.name ?? null]), [['db/pg', 'skipped', null], ['mail', 'restored', '2026-01-01']]);
  await assertTreesEqual(t, mail.snapshots[0]!.state!, join(early, 'mail'), undefined, 'mail@2026-01-01 identical');
  await t.rejects(fsp.access(join(early, 'db')), 'nothing for a source without a snapshot by then');

  // A date after everything: the newest of each.
  const late = join(base, 'dr-late');
  await runSnapfs(['restore', repo, '--all-sources', '@2026-02-01', late], { env });
  await assertTreesEqual(t, mail.snapshots[1]!.state!, join(late, 'mail'));
  await assertTreesEqual(t, db.snapshots[1]!.state!, join(late, 'db', 'pg'));

  const busy = await runSnapfs(['restore', repo, '--all-sources', '@last', target], { env, allowFail: true });
  t.equal(busy.code, 2);
  t.match(busy.stderr, /is not empty/);
  const bad = await runSnapfs(['restore', repo, '--all-sources', 'mail@last', join(base, 'x')], { env, allowFail: true });
  t.match(bad.stderr, /with --all-sources the spec is @DATE or @last/);
});
