// Deduplication: unchanged data costs nothing, a shifted file re-stores only the chunks
// around the edit, identical content under two sources is stored once.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { XorShift32, generateSmallTree } from './helpers/tree-gen.js';
import { runSnapfs, tmpDir } from './helpers/cli.js';
import { assertTreesEqual } from './helpers/tree-compare.js';

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await fs.stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

function randomBytes(n: number, seed: number): Buffer {
  return new XorShift32(seed).bytes(n);
}

t.test('a second backup of an unchanged tree adds less than 0.1% of its size', async (t) => {
  const work = await tmpDir(t, 'dedup-unchanged');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await generateSmallTree(src, { files: 400, dirs: 20, seed: 7 });
  await fs.writeFile(path.join(src, 'large.bin'), randomBytes(40 * 1024 * 1024, 3));
  await runSnapfs(['init', repo]);
  await runSnapfs(['backup', repo, src, '--source', 's']);
  const before = await dirBytes(path.join(repo, 'packs'));
  const second = await runSnapfs(['backup', repo, src, '--source', 's', '--json']);
  const after = await dirBytes(path.join(repo, 'packs'));
  const treeSize = second.json.snapshot.stats.bytesTotal;
  t.ok(after - before < treeSize * 0.001, `second backup added ${after - before} bytes for a ${treeSize}-byte tree`);
  t.equal(second.json.snapshot.stats.filesOpened, 0, 'no file was opened');
  t.equal(second.json.snapshot.stats.dataBlobsAdded, 0, 'no chunk was stored');
});

t.test('one byte inserted at the start of a 100 MB file re-stores at most 2 chunks', async (t) => {
  const work = await tmpDir(t, 'dedup-shift');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(src);
  const data = randomBytes(100 * 1000 * 1000, 11);
  await fs.writeFile(path.join(src, 'dump.sql'), data);
  await runSnapfs(['init', repo]);
  const first = await runSnapfs(['backup', repo, src, '--source', 'db', '--json']);
  t.ok(first.json.snapshot.stats.dataBlobsAdded > 50, `file cut into ${first.json.snapshot.stats.dataBlobsAdded} chunks`);
  await fs.writeFile(path.join(src, 'dump.sql'), Buffer.concat([Buffer.from('X'), data]));
  const second = await runSnapfs(['backup', repo, src, '--source', 'db', '--json']);
  t.ok(second.json.snapshot.stats.dataBlobsAdded <= 2, `${second.json.snapshot.stats.dataBlobsAdded} chunks re-stored`);
  t.equal(second.json.snapshot.stats.filesChanged, 1);
  const cat = await runSnapfs(['restore', repo, 'db@last:dump.sql', path.join(work, 'out')]);
  t.equal(cat.code, 0);
  const restored = await fs.readFile(path.join(work, 'out', 'dump.sql'));
  t.ok(restored.equals(Buffer.concat([Buffer.from('X'), data])), 'restored bytes equal the new version');
});

t.test('the same file under two sources is stored once', async (t) => {
  const work = await tmpDir(t, 'dedup-sources');
  const a = path.join(work, 'a');
  const b = path.join(work, 'b');
  const repo = path.join(work, 'repo');
  await fs.mkdir(a);
  await fs.mkdir(b);
  const data = randomBytes(20 * 1024 * 1024, 5);
  await fs.writeFile(path.join(a, 'segment.idx'), data);
  await fs.writeFile(path.join(b, 'copy-of-segment'), data);
  await runSnapfs(['init', repo]);
  const first = await runSnapfs(['backup', repo, a, '--source', 'hostA/index', '--json']);
  const second = await runSnapfs(['backup', repo, b, '--source', 'hostB/index', '--json']);
  t.ok(first.json.snapshot.stats.dataBlobsAdded > 0);
  t.equal(second.json.snapshot.stats.dataBlobsAdded, 0, 'no chunk of the second copy was stored');
  t.equal(second.json.snapshot.stats.filesOpened, 1, 'the second copy was read (new to its source)');
  const out = path.join(work, 'out');
  await runSnapfs(['restore', repo, 'hostB/index@last', out]);
  await assertTreesEqual(t, b, out);
});
