// Hostile names and shapes: a file for every byte 1-255 but '/', one name holding all 254 of
// them, 255-byte names, a 4,095-byte symlink target, a path of ~5,000 bytes (beyond
// PATH_MAX) and a tree 1,000 levels deep. Backup, ls -R, check, cat and restore must carry
// every byte, and the restored tree equals the source entry for entry.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { initRepo } from './helpers/history.js';
import { assertClean, snapfs } from './helpers/fault.js';
import { longManifest, makeChain } from './helpers/long-tree.js';

const SLASH = Buffer.from('/');

function diffManifests(a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of a) if (b.get(k) !== v) out.push(`${Buffer.from(k, 'latin1').toString('hex').slice(0, 80)}: ${v} != ${b.get(k)}`);
  for (const k of b.keys()) if (!a.has(k)) out.push(`${Buffer.from(k, 'latin1').toString('hex').slice(0, 80)}: unexpected`);
  return out.slice(0, 20);
}

t.test('every byte, 255-byte names, paths beyond PATH_MAX, 1,000 levels', async (t) => {
  const base = await tmpDir(t, 'hostile-names');
  // Node's fs.rm cannot remove paths beyond PATH_MAX; GNU rm walks with openat().
  t.teardown(() => runProcess('rm', ['-rf', base], { allowFail: true }));
  const src = join(base, 'src');
  const repo = join(base, 'repo');
  await fsp.mkdir(join(src, 'bytes'), { recursive: true });
  const bytesDir = Buffer.from(join(src, 'bytes'));
  const every: number[] = [];
  for (let b = 1; b <= 255; b++) {
    if (b === 0x2f) continue;
    every.push(b);
    const name = b === 0x2e ? Buffer.from('...') : Buffer.from([b]);
    await fsp.writeFile(Buffer.concat([bytesDir, SLASH, name]), `byte ${b}\n`);
  }
  const allBytes = Buffer.from(every);
  t.equal(allBytes.length, 254);
  await fsp.writeFile(Buffer.concat([bytesDir, SLASH, allBytes]), 'every byte but / in one name\n');
  const oddDir = Buffer.concat([bytesDir, SLASH, Buffer.from([0x0a, 0xff, 0xfe, 0x20, 0x09, 0x1b, 0x5c])]);
  await fsp.mkdir(oddDir);
  await fsp.writeFile(Buffer.concat([oddDir, SLASH, Buffer.from([0xc3, 0x28])]), 'invalid utf-8 inside a directory with a newline\n');

  await fsp.mkdir(join(src, 'long'));
  const n255 = 'x'.repeat(255);
  await fsp.writeFile(join(src, 'long', n255), 'a 255-byte name\n');
  await fsp.mkdir(join(src, 'long', 'd'.repeat(255)));
  await fsp.symlink('t/'.repeat(2047) + 't', join(src, 'long', 'd'.repeat(255), 'l'.repeat(255)));

  // ~5,000 bytes of path: 20 directories of 250-byte names.
  const wide = Array.from({ length: 20 }, (_, i) => Buffer.from(`${String(i).padStart(2, '0')}${'w'.repeat(248)}`));
  await fsp.mkdir(join(src, 'deep255'));
  await makeChain(join(src, 'deep255'), wide, (dir) => fsp.writeFile(Buffer.concat([dir, SLASH, Buffer.from('bottom.txt')]), 'beyond PATH_MAX\n'));
  // 1,000 levels (~11,000 bytes of path).
  const levels = Array.from({ length: 1000 }, (_, i) => Buffer.from(`level-${String(i).padStart(4, '0')}`));
  await fsp.mkdir(join(src, 'deep1000'));
  await makeChain(join(src, 'deep1000'), levels, (dir) => fsp.writeFile(Buffer.concat([dir, SLASH, Buffer.from('bottom.txt')]), '1,000 levels down\n'));
  const expected = await longManifest(src);
  t.comment(`${expected.size} entries`);

  await initRepo(repo);
  let started = Date.now();
  const b = await snapfs(['backup', repo, src, '--source', 'odd', '--json']);
  assertClean(t, b, 'backup', [0]);
  t.same(b.json?.warnings, [], 'no warnings: every name and path was read');
  t.comment(`backup ${Date.now() - started} ms`);

  const ls = await snapfs(['ls', repo, 'odd@last', '-R', '--json']);
  assertClean(t, ls, 'ls -R', [0]);
  t.equal(ls.json?.entries?.length, expected.size, 'ls -R lists every entry');
  const b64 = new Set((ls.json?.entries ?? []).map((e: any) => e.nameBase64).filter(Boolean));
  t.ok(b64.has(Buffer.concat([Buffer.from('bytes/'), allBytes]).toString('base64')), 'the all-bytes name comes through --json (as base64)');
  const human = await snapfs(['ls', repo, 'odd@last:bytes']);
  assertClean(t, human, 'ls (human)', [0]);
  t.equal(human.stdout.trim().split('\n').length, 256, 'one line per entry, whatever bytes the names hold');

  assertClean(t, await snapfs(['check', repo, '--read-data']), 'check --read-data', [0]);
  const deepSpec = `odd@last:deep1000/${levels.map((l) => l.toString()).join('/')}/bottom.txt`;
  const cat = await snapfs(['cat', repo, deepSpec]);
  assertClean(t, cat, 'cat of the file 1,000 levels down', [0]);
  t.equal(cat.stdout, '1,000 levels down\n');

  started = Date.now();
  const out = join(base, 'out');
  assertClean(t, await snapfs(['restore', repo, 'odd@last', out]), 'restore', [0]);
  t.comment(`restore ${Date.now() - started} ms`);
  t.same(diffManifests(expected, await longManifest(out)), [], 'the restored tree equals the source, byte for byte');

  const again = await snapfs(['backup', repo, src, '--source', 'odd', '--json']);
  assertClean(t, again, 'second backup', [0]);
  t.equal(again.json?.snapshot?.stats?.filesOpened, 0, 'nothing is read again');
  t.equal(again.json?.snapshot?.root, b.json?.snapshot?.root, 'the unchanged tree keeps its id');
});
