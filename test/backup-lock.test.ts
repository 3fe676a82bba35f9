// One writer at a time: a second backup fails at once, naming the holder's pid.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { XorShift32 } from './helpers/tree-gen.js';
import { runSnapfs, spawnSnapfs, tmpDir } from './helpers/cli.js';
import { flock } from '../lib/platform/native.js';

t.test('two simultaneous backups: one wins, the other fails fast with the lock message', async (t) => {
  const work = await tmpDir(t, 'lock');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'big.bin'), new XorShift32(1).bytes(400 * 1024 * 1024));
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

t.test('a writer holding the lock makes backup fail at once, naming it; released, backup runs', async (t) => {
  const work = await tmpDir(t, 'lock-held');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'f'), 'x');
  await runSnapfs(['init', repo]);
  // This process plays the other writer: the same flock and note a writer takes.
  const fh = await fs.open(path.join(repo, 'lock'), 'a+', 0o600);
  t.teardown(() => fh.close().catch(() => undefined));
  t.ok(flock(fh.fd, true, true), 'the lock was free');
  await fh.truncate(0);
  await fh.write(JSON.stringify({ pid: process.pid, operation: 'prune', host: 'test', since: new Date().toISOString() }), 0);
  const started = Date.now();
  const blocked = await runSnapfs(['backup', repo, src, '--source', 's'], { allowFail: true });
  t.equal(blocked.code, 12, 'exit code 12 while another writer holds the lock');
  t.match(blocked.stderr, new RegExp(`locked by pid ${process.pid} .*snapfs prune`), 'the message names the holder and what it does');
  t.ok(Date.now() - started < 10_000, 'it did not wait for the lock');
  t.same((await runSnapfs(['snapshots', repo, '--json'])).json.snapshots, [], 'no snapshot was written');
  await fh.close();
  const free = await runSnapfs(['backup', repo, src, '--source', 's']);
  t.equal(free.code, 0, 'once released, the backup runs');
});
