// One writer at a time: a second backup fails at once, naming the holder's pid.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { XorShift32 } from './helpers/tree-gen.js';
import { runSnapfs, spawnSnapfs, tmpDir } from './helpers/cli.js';

t.test('two simultaneous backups: one wins, the other fails fast with the lock message', async (t) => {
  const work = await tmpDir(t, 'lock');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'big.bin'), new XorShift32(1).bytes(150 * 1024 * 1024));
  await runSnapfs(['init', repo]);

  const first = spawnSnapfs(['backup', repo, src, '--source', 'a']);
  const firstExit = new Promise<number | null>((r) => first.once('exit', (code) => r(code)));
  // Wait until the first backup holds the lock (it writes its pid into the lock file).
  for (;;) {
    const note = await fs.readFile(path.join(repo, 'lock'), 'utf8').catch(() => '');
    if (note.includes(`"pid":${first.pid}`)) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const started = Date.now();
  const second = await runSnapfs(['backup', repo, src, '--source', 'b'], { allowFail: true });
  const took = Date.now() - started;
  t.equal(second.code, 12, 'the second writer exits with the lock code');
  t.match(second.stderr, new RegExp(`locked by pid ${first.pid}`), 'and names the holder');
  t.ok(took < 5000, `it failed fast (${took} ms)`);
  t.equal(await firstExit, 0, 'the first backup completes');
  const list = (await runSnapfs(['snapshots', repo, '--json'])).json.snapshots;
  t.same(list.map((s: { source: string }) => s.source), ['a'], 'only the winner made a snapshot');
  const again = await runSnapfs(['backup', repo, src, '--source', 'b']);
  t.equal(again.code, 0, 'the lock is free once the winner is done');
});
