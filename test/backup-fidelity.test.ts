// Fidelity: everything a backup stores comes back exactly, through the real CLI, real
// packs and a real LMDB index.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { generateFidelityTree } from './helpers/tree-gen.js';
import { assertTreesEqual } from './helpers/tree-compare.js';
import { runSnapfs, tmpDir } from './helpers/cli.js';

const chunk = { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 };

t.test('backup then restore reproduces every byte and every stat field', async (t) => {
  const work = await tmpDir(t, 'fidelity');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await generateFidelityTree(src, { chunk, bigFileBytes: 200 * 1024 * 1024 });
  await runSnapfs(['init', repo]);
  const b = await runSnapfs(['backup', repo, src, '--source', 'host/fidelity', '--json']);
  t.equal(b.code, 0, 'backup exits 0');
  t.equal(b.json.snapshot.partial, false, 'nothing was skipped');
  t.same(b.json.warnings, [], 'no warnings');

  const out = path.join(work, 'restored');
  await runSnapfs(['restore', repo, 'host/fidelity@last', out]);
  await assertTreesEqual(t, src, out);

  // The sparse file's holes were not stored: the pack files stay far below the tree's
  // apparent size (200 MiB random + small files; the sparse file claims > 10 MiB more).
  const stats = await runSnapfs(['stats', repo, '--json']);
  const apparent = b.json.snapshot.stats.bytesTotal;
  t.ok(stats.json.packBytes < apparent, `packs (${stats.json.packBytes}) smaller than the files' apparent size (${apparent})`);
});

t.test('a single path restores on its own, and cat prints exact bytes', async (t) => {
  const work = await tmpDir(t, 'fidelity-path');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(path.join(src, 'users', 'bob', 'Maildir'), { recursive: true });
  await fs.mkdir(path.join(src, 'users', 'amy'), { recursive: true });
  const msg = Buffer.from('From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n');
  await fs.writeFile(path.join(src, 'users', 'bob', 'Maildir', '1.'), msg);
  await fs.writeFile(path.join(src, 'users', 'amy', 'notes'), 'amy');
  await runSnapfs(['init', repo, '--chunk-avg', '65536']);
  await runSnapfs(['backup', repo, src, '--source', 'mail']);

  const cat = await runSnapfs(['cat', repo, 'mail@last:users/bob/Maildir/1.']);
  t.equal(cat.stdout, msg.toString(), 'cat gives the stored bytes');

  const out = path.join(work, 'one-user');
  await runSnapfs(['restore', repo, 'mail@last:users/bob', out]);
  await assertTreesEqual(t, path.join(src, 'users', 'bob'), path.join(out, 'bob'));
  await t.rejects(fs.access(path.join(out, 'amy')), 'other users are not restored');
});
