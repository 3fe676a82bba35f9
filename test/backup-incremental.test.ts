// Incremental backups: unchanged files are not opened and keep their `since`.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { generateSmallTree, mutateFiles } from './helpers/tree-gen.js';
import { runSnapfs, tmpDir } from './helpers/cli.js';
import { assertTreesEqual } from './helpers/tree-compare.js';
import { listPackFiles, readPackTrailer } from '../lib/store/pack-files.js';
import { RepoLayout } from '../lib/store/layout.js';
import { BlobType } from '../lib/format/pack.js';

/** path -> ls --json entry, for every non-directory of a snapshot. */
async function listRecursive(repo: string, spec: string): Promise<Map<string, any>> {
  const res = await runSnapfs(['ls', repo, spec, '--recursive', '--json']);
  return new Map(res.json.entries.filter((e: any) => e.type !== 'directory').map((e: any) => [e.name, e]));
}

t.test('3 of 1,000 files changed: exactly 3 are opened, the rest keep their since', async (t) => {
  const work = await tmpDir(t, 'incremental');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const files = await generateSmallTree(src, { files: 1000, dirs: 30, seed: 42 });
  t.equal(files.length, 1000);
  await runSnapfs(['init', repo, '--chunk-avg', '65536']);
  const first = await runSnapfs(['backup', repo, src, '--source', 'mail', '--time', '2026-11-27T02:00:00Z', '--json']);
  t.equal(first.json.snapshot.stats.filesOpened, 1000, 'first backup reads everything');

  const changed = [files[3]!, files[500]!, files[999]!];
  await mutateFiles(src, changed, 9);
  const second = await runSnapfs(['backup', repo, src, '--source', 'mail', '--time', '2026-11-28T02:00:00Z', '--json']);
  const s = second.json.snapshot.stats;
  t.equal(s.filesOpened, 3, 'exactly the 3 changed files were opened');
  t.equal(s.filesChanged, 3);
  t.equal(s.filesUnchanged, 997);
  t.equal(second.json.snapshot.generation, 2);

  const day1 = await listRecursive(repo, 'mail@2026-11-27');
  const day2 = await listRecursive(repo, 'mail@2026-11-28');
  t.equal(day2.size, 1000);
  let keptSince = 0;
  for (const [name, e] of day2) {
    if (changed.includes(name)) {
      t.equal(e.since, 2, `${name} changed: since is the new generation`);
    } else if (e.since === day1.get(name)?.since && e.since === 1) keptSince++;
  }
  t.equal(keptSince, 997, 'every unchanged file keeps since = 1');

  const out = path.join(work, 'out');
  await runSnapfs(['restore', repo, 'mail@last', out]);
  await assertTreesEqual(t, src, out);
});

t.test('a no-change backup reuses the whole tree', async (t) => {
  const work = await tmpDir(t, 'incremental-same');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await generateSmallTree(src, { files: 200, dirs: 10, seed: 1 });
  await runSnapfs(['init', repo, '--chunk-avg', '65536']);
  const a = await runSnapfs(['backup', repo, src, '--source', 'x', '--json']);
  const b = await runSnapfs(['backup', repo, src, '--source', 'x', '--json']);
  t.equal(b.json.snapshot.root, a.json.snapshot.root, 'same root tree id');
  t.equal(b.json.snapshot.stats.blobsAdded, 0, 'nothing stored');
  t.equal(b.json.snapshot.name.endsWith('_2'), true, 'second snapshot of the day gets _2');
  // A removed file disappears from the next snapshot but stays in the old one.
  const victim = (await fs.readdir(src, { recursive: true, withFileTypes: true })).find((e) => e.isFile())!;
  await fs.rm(path.join(victim.parentPath, victim.name));
  const c = await runSnapfs(['backup', repo, src, '--source', 'x', '--json']);
  t.not(c.json.snapshot.root, a.json.snapshot.root, 'tree changed after a removal');
  const rel = path.relative(src, path.join(victim.parentPath, victim.name));
  const old = await runSnapfs(['cat', repo, `x@${a.json.snapshot.name}:${rel}`]);
  t.equal(old.code, 0, 'the removed file is still in the earlier snapshot');
  const gone = await runSnapfs(['cat', repo, `x@last:${rel}`], { allowFail: true });
  t.equal(gone.code, 14, 'and absent from the newest');
});

t.test('unchanged files whose chunks a rebuilt index lost are read again; verified parents are trusted', async (t) => {
  // The index records, per source, the snapshot whose chunks are all indexed; a backup from
  // that parent reuses unchanged entries without looking their chunks up. 'repair index'
  // builds a new index without that record, so the next backup looks every chunk up again
  // and re-reads the files whose content went with a lost pack.
  const work = await tmpDir(t, 'incremental-verified');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await generateSmallTree(src, { files: 300, dirs: 12, seed: 7 });
  await runSnapfs(['init', repo, '--chunk-avg', '65536', '--pack-size', '65536']);
  await runSnapfs(['backup', repo, src, '--source', 'v', '--json']);
  const second = await runSnapfs(['backup', repo, src, '--source', 'v', '--json']);
  t.equal(second.json.snapshot.stats.filesOpened, 0, 'no change: nothing opened');

  const layout = new RepoLayout(repo);
  const dataPacks: string[] = [];
  for (const hex of await listPackFiles(layout)) {
    const { blobs } = await readPackTrailer(layout.packFile(hex));
    if (blobs.every((b) => b.type === BlobType.Data)) dataPacks.push(layout.packFile(hex));
  }
  t.ok(dataPacks.length >= 2, 'several data packs');
  await fs.rm(dataPacks[0]!);
  const repair = await runSnapfs(['repair', 'index', repo], { allowFail: true });
  t.equal(repair.code, 0, `repair index ${repair.stderr}`);

  const healed = await runSnapfs(['backup', repo, src, '--source', 'v', '--json']);
  const opened = healed.json.snapshot.stats.filesOpened;
  t.ok(opened > 0, `the files of the lost pack are read again (${opened})`);
  t.ok(opened < 300, 'and only those');
  const again = await runSnapfs(['backup', repo, src, '--source', 'v', '--json']);
  t.equal(again.json.snapshot.stats.filesOpened, 0, 'the healed snapshot is verified: nothing opened');
  const check = await runSnapfs(['check', repo, '--read-data', '--json'], { allowFail: true });
  t.notOk((check.json?.damagedSnapshots ?? []).some((s: string) => s === `v@${again.json.snapshot.name}`), 'the newest snapshot is intact');

  const out = path.join(work, 'out');
  await runSnapfs(['restore', repo, 'v@last', out]);
  await assertTreesEqual(t, src, out);
});
