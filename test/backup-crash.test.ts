// Crash safety: SIGKILL of `snapfs backup` at random moments never damages the
// repository: the interrupted snapshot does not exist, every committed snapshot restores
// byte-identical, and the next backup succeeds, reusing chunks already packed.
import t from 'tap';
import { promises as fs } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { XorShift32, generateSmallTree } from './helpers/tree-gen.js';
import { runSnapfs, spawnSnapfs, tmpDir } from './helpers/cli.js';

/** relative path -> sha256 of content, for every regular file. */
async function manifest(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await fs.readdir(root, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = path.join(e.parentPath, e.name);
    out.set(path.relative(root, p), createHash('sha256').update(await fs.readFile(p)).digest('hex'));
  }
  return out;
}

function waitExit(child: ReturnType<typeof spawnSnapfs>): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

async function countPacks(repo: string): Promise<number> {
  let n = 0;
  for (const e of await fs.readdir(path.join(repo, 'packs'), { recursive: true })) if (String(e).endsWith('.pack')) n++;
  return n;
}

t.test('SIGKILL at random moments leaves only whole snapshots', async (t) => {
  const iterations = Number(process.env.SNAPFS_CRASH_ITERATIONS ?? 20);
  const work = await tmpDir(t, 'crash');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await generateSmallTree(src, { files: 300, dirs: 15, seed: 3 });
  const rng = new XorShift32(2026);
  await fs.writeFile(path.join(src, 'big.bin'), rng.bytes(24 * 1024 * 1024));
  await runSnapfs(['init', repo, '--chunk-avg', '65536', '--pack-size', '1048576']);

  const committed = new Map<string, Map<string, string>>(); // snapshot id -> manifest
  let killed = 0;
  for (let i = 0; i < iterations; i++) {
    // A new file and a rewritten region of the big file: each run has new data to pack.
    await fs.writeFile(path.join(src, `new-${i}.bin`), rng.bytes(2 * 1024 * 1024));
    const fh = await fs.open(path.join(src, 'big.bin'), 'r+');
    await fh.write(rng.bytes(512 * 1024), 0, 512 * 1024, (rng.next() % 40) * 512 * 1024);
    await fh.close();
    const expected = await manifest(src);

    const child = spawnSnapfs(['backup', repo, src, '--source', 'crash', '--json']);
    const delay = 50 + (rng.next() % 1500);
    const timer = setTimeout(() => child.kill('SIGKILL'), delay);
    const { code, signal } = await waitExit(child);
    clearTimeout(timer);
    const list = (await runSnapfs(['snapshots', repo, '--json'])).json.snapshots as Array<{ id: string }>;
    if (signal === 'SIGKILL') {
      // A kill that lands after the snapshot record was committed (while the process closes
      // down) leaves that snapshot, which must then be whole: the restores below prove it.
      const added = list.filter((s) => !committed.has(s.id));
      if (added.length === 1) {
        committed.set(added[0]!.id, expected);
        t.pass(`iteration ${i}: killed after ${delay} ms, after the commit: one new snapshot`);
      } else {
        killed++;
        t.equal(list.length, committed.size, `iteration ${i}: killed after ${delay} ms, no new snapshot`);
      }
    } else {
      t.equal(code, 0, `iteration ${i}: backup finished before the kill`);
      const id = JSON.parse(child.output().stdout).snapshot.id as string;
      committed.set(id, expected);
      t.equal(list.length, committed.size, `iteration ${i}: exactly one new snapshot`);
    }
    t.same(list.map((s) => s.id).sort(), [...committed.keys()].sort(), 'the snapshot list is exactly the committed ones');
  }
  t.ok(killed >= iterations / 4, `${killed} of ${iterations} runs were killed mid-backup`);

  // The next backup succeeds; then every snapshot restores to exactly what it saw.
  const last = await runSnapfs(['backup', repo, src, '--source', 'crash', '--json']);
  committed.set(last.json.snapshot.id, await manifest(src));
  for (const [id, expected] of committed) {
    const out = path.join(work, `restore-${id}`);
    await runSnapfs(['restore', repo, `crash@${id}`, out]);
    t.same(await manifest(out), expected, `snapshot ${id.slice(0, 8)} restores byte-identical`);
    await fs.rm(out, { recursive: true });
  }
});

t.test('a killed backup leaves sealed packs that the next backup reuses', async (t) => {
  const work = await tmpDir(t, 'crash-reuse');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'dump.sql'), new XorShift32(77).bytes(256 * 1024 * 1024));
  await runSnapfs(['init', repo, '--chunk-avg', '65536', '--pack-size', '1048576']);

  const child = spawnSnapfs(['backup', repo, src, '--source', 'db']);
  const exit = waitExit(child);
  // Kill once a good part of the data is packed.
  // Kill a quarter of the way in, once the index has had a moment to catch up with the
  // sealed packs (it commits each pack right after sealing it).
  while ((await countPacks(repo)) < 48) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 150));
  child.kill('SIGKILL');
  t.equal((await exit).signal, 'SIGKILL', 'killed mid-backup');
  t.same((await runSnapfs(['snapshots', repo, '--json'])).json.snapshots, [], 'no snapshot exists');

  const next = await runSnapfs(['backup', repo, src, '--source', 'db', '--json']);
  const s = next.json.snapshot.stats;
  const chunks = Math.round((256 * 1024 * 1024) / 65536);
  t.ok(s.dataBlobsAdded < chunks * 0.9, `only ${s.dataBlobsAdded} of ~${chunks} chunks stored again`);
  const out = path.join(work, 'out');
  await runSnapfs(['restore', repo, 'db@last', out]);
  t.ok((await fs.readFile(path.join(out, 'dump.sql'))).equals(await fs.readFile(path.join(src, 'dump.sql'))), 'restores identical');
  const incoming = await fs.readdir(path.join(repo, 'packs', 'incoming')).catch(() => []);
  t.same(incoming, [], 'the crashed run\'s unsealed pack was cleaned up');
});
