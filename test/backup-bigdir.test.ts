// A mail folder too big to be handled in one piece: the writer walks it in windows of
// entries beside the parent tree's pages and stores pages as they are cut. Every state
// restores exactly; an unchanged folder keeps its tree; one new message adds a page or
// two, not the folder; `ls` streams the whole listing.
import t from 'tap';
import { promises as fs, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runSnapfs, tmpDir } from './helpers/cli.js';
import { assertTreesEqual } from './helpers/tree-compare.js';

const N = 12_000; // about three windows of the writer
const name = (i: number) => `${1700000000 + i}.M${i % 997}.mailhost:2,S`;

async function backup(repo: string, src: string, day: number, ...more: string[]) {
  const r = await runSnapfs(['backup', repo, src, '--source', 'mail', '--time', `2026-03-0${day}T02:00:00Z`, '--json', ...more]);
  return r.json.snapshot;
}

t.test('a directory of many windows: exact, incremental, listed in full', async (t) => {
  const work = await tmpDir(t, 'bigdir');
  const src = path.join(work, 'src');
  const box = path.join(src, 'INBOX', 'cur');
  const repo = path.join(work, 'repo');
  await fs.mkdir(box, { recursive: true });
  for (let i = 0; i < N; i++) writeFileSync(path.join(box, name(i)), `Message-ID: <${i}@example.org>\n\n${'body '.repeat(i % 50)}\n`);
  // Subdirectories among the names, in the first and the last window.
  await fs.mkdir(path.join(box, '1700000000.sub'));
  await fs.writeFile(path.join(box, '1700000000.sub', 'inner'), 'inner\n');
  await fs.mkdir(path.join(box, 'zz-last-dir'));
  await runSnapfs(['init', repo]);

  const day1 = await backup(repo, src, 1);
  const out1 = path.join(work, 'out1');
  await runSnapfs(['restore', repo, 'mail@last', out1]);
  await assertTreesEqual(t, src, out1);

  const day2 = await backup(repo, src, 2);
  t.equal(day2.root, day1.root, 'unchanged: the same root tree');
  t.equal(day2.stats.blobsAdded, 0, 'unchanged: nothing stored');

  // One new message, one deleted, one rewritten, in different windows.
  await fs.writeFile(path.join(box, `${name(6000)}.new`), 'new message\n');
  await fs.rm(path.join(box, name(100)));
  await fs.writeFile(path.join(box, name(11_000)), 'rewritten\n');
  const day3 = await backup(repo, src, 3);
  t.not(day3.root, day1.root, 'changed: a new root tree');
  t.ok(day3.stats.blobsAdded <= 12, `a few pages, not the folder: ${day3.stats.blobsAdded} blobs added`);
  t.equal(day3.stats.filesNew + day3.stats.filesChanged, 2, 'one new, one rewritten');
  const out3 = path.join(work, 'out3');
  await runSnapfs(['restore', repo, 'mail@last', out3]);
  await assertTreesEqual(t, src, out3);

  // Excluding names the parent held makes a new tree without them.
  const day4 = await backup(repo, src, 4, '--exclude', 'INBOX/cur/17000001*');
  const listed = await runSnapfs(['ls', repo, `mail@${day4.id}:INBOX/cur`, '--json']);
  const names = (listed.json.entries as Array<{ name: string }>).map((e) => e.name);
  const expected = (await fs.readdir(box)).filter((n) => !n.startsWith('17000001')).sort();
  t.same(names, expected, 'ls --json lists exactly the kept names, in order');
  const human = await runSnapfs(['ls', repo, 'mail@last:INBOX/cur']);
  t.equal(human.stdout.trimEnd().split('\n').length, expected.length, 'ls prints one line per entry');

  // The earlier snapshots are untouched by all this.
  const again = path.join(work, 'again');
  await runSnapfs(['restore', repo, `mail@${day1.id}`, again]);
  await assertTreesEqual(t, out1, again);
});
