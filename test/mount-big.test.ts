// A directory with 100,000 entries (a mailbox folder): listing completes, and a lookup
// in it is a binary search over tree pages, fast even right after mounting. The serving
// process's memory stays bounded while it does both.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground, readAheadSettled, serverMemory } from './helpers/mount.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const N = 100_000;
const name = (i: number) => `msg${String(i).padStart(6, '0')}`;

async function rssOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

t.test('100,000 entries in one directory: ls completes, lookups are fast', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-big');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  const box = path.join(src, 'Maildir', 'cur');
  await fs.mkdir(box, { recursive: true });
  await runProcess('sh', ['-c', `cd "$1" && seq -f 'msg%06g' 0 ${N - 1} | xargs touch`, 'sh', box]);
  // Messages with content: a few spread out, and a run after 54,321 (read ahead below).
  const run = Array.from({ length: 20 }, (_, k) => 54_321 + k);
  for (const i of [0, 12_345, ...run, N - 1]) await fs.writeFile(path.join(box, name(i)), `message ${i}\n`);
  await initRepo(repo);
  await backup(repo, src, 'mail');
  await fs.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt);
  const dir = path.join(mnt, 'mail', 'last', 'Maildir', 'cur');

  // A lookup right after mounting: the index page and one leaf page, not the listing.
  let t0 = Date.now();
  t.equal(await fs.readFile(path.join(dir, name(54_321)), 'utf8'), 'message 54321\n', 'read by name in the big directory');
  const cold = Date.now() - t0;
  t.ok(cold < 2000, `first lookup in the cold directory took ${cold} ms`);

  t0 = Date.now();
  const ls = await runProcess('sh', ['-c', 'ls "$1" | wc -l', 'sh', dir]);
  const lsMs = Date.now() - t0;
  t.equal(Number(ls.stdout.trim()), N, `ls lists all ${N} entries (${lsMs} ms)`);
  const f = await runProcess('sh', ['-c', 'ls -f "$1" | head -3; ls -f "$1" | tail -1', 'sh', dir]);
  t.same(f.stdout.trim().split('\n'), ['.', '..', name(0), name(N - 1)], 'readdir order: . and .. then names in byte order');
  const find = await runProcess('sh', ['-c', 'find "$1" -type f | wc -l', 'sh', dir]);
  t.equal(Number(find.stdout.trim()), N, 'find -type f sees every file (d_type from readdir)');

  // Lookups of names spread over the whole directory.
  let worst = 0;
  t0 = Date.now();
  for (let k = 0; k < 300; k++) {
    const i = (k * 7919) % N;
    const s = Date.now();
    const st = await fs.lstat(path.join(dir, name(i)));
    worst = Math.max(worst, Date.now() - s);
    if (!st.isFile()) t.fail(`${name(i)} is not a file`);
  }
  const avg = (Date.now() - t0) / 300;
  t.ok(avg < 20, `300 lookups: ${avg.toFixed(2)} ms on average, worst ${worst} ms`);
  await t.rejects(fs.lstat(path.join(dir, 'msg1000000')), { code: 'ENOENT' }, 'a missing name: ENOENT');

  const mem = await rssOf(m.info.pid);
  t.ok(mem.hwm < 400 * 1024 * 1024, `server memory stays bounded: rss ${(mem.rss / 1048576).toFixed(0)} MiB, peak ${(mem.hwm / 1048576).toFixed(0)} MiB`);

  // ls -l looks up every name, and the kernel keeps each inode (a node id it may ask
  // about) until it forgets it: the server keeps a compact record per held node, not a
  // whole node (~1.5 KiB of objects each, which grew ls -l of 1,000,000 names to 1.5 GiB).
  const before = await rssOf(m.info.pid);
  const js0 = await serverMemory(m);
  t0 = Date.now();
  const long = await runProcess('sh', ['-c', 'ls -l "$1" | wc -l', 'sh', dir]);
  t.equal(Number(long.stdout.trim()), N + 1, `ls -l lists all ${N} entries and a total line (${Date.now() - t0} ms)`);
  const after = await rssOf(m.info.pid);
  const js1 = await serverMemory(m);
  const held = js1.held;
  t.ok(held >= N / 2, `the kernel holds the looked-up nodes: ${held}`);
  // The directory was looked up in above, so its listing pages carry nodes: the kernel
  // takes them with a READDIRPLUS reply, or the binding answers its lookups from them.
  t.ok(js1.fromListings >= N * 0.9, `nodes the kernel took from listings, not from lookups answered by JS: ${js1.fromListings}`);
  // What the server keeps (JS heap in use and memory outside it, after the full
  // collection the memory line starts with) grows by a record per node (tens of bytes);
  // a whole node per held inode was ~1,400. RSS also carries the heap's free space, which
  // moves with the garbage of the moment: a looser bound.
  const keptPerNode = (js1.heapUsed + js1.external - js0.heapUsed - js0.external) / Math.max(1, held);
  t.ok(keptPerNode < 200, `server keeps ${keptPerNode.toFixed(0)} bytes per held node (heap in use ${mib(js0.heapUsed)} -> ${mib(js1.heapUsed)}, external ${mib(js0.external)} -> ${mib(js1.external)})`);
  const rssPerNode = (after.rss - before.rss) / Math.max(1, held);
  t.ok(rssPerNode < 900, `server RSS per held node: ${rssPerNode.toFixed(0)} bytes (rss ${mib(before.rss)} -> ${mib(after.rss)}, peak ${mib(after.hwm)})`);

  // After 54,321 (the first read above), reading 54,322 is a second file of the directory
  // in order: the files after it are read ahead, found by position in the middle of the
  // paged directory, and pushed into the page cache (the kernel holds their nodes since
  // ls -l); reads the kernel still sends are answered by the binding. None reaches JS.
  const c0 = (await serverMemory(m)).requests;
  t.equal(await fs.readFile(path.join(dir, name(run[1]!)), 'utf8'), `message ${run[1]}\n`, `read ${name(run[1]!)}`);
  await readAheadSettled(m);
  const c1 = (await serverMemory(m)).requests;
  for (const i of run.slice(2)) t.equal(await fs.readFile(path.join(dir, name(i)), 'utf8'), `message ${i}\n`, `read ${name(i)}`);
  const c2 = (await serverMemory(m)).requests;
  const delta = (k: string, a: Record<string, number>, b: Record<string, number>): number => (b[k] ?? 0) - (a[k] ?? 0);
  const fromStore = delta('READ of files read ahead', c1, c2);
  const byJs = delta('READ', c1, c2) - fromStore;
  const pushed = delta('files pushed', c0, c2);
  t.ok(byJs <= 1 && pushed + fromStore >= run.length - 3, `the files after the second one read came from the read-ahead: ${pushed} pushed into the page cache, ${fromStore} reads answered from the store, ${byJs} by JS, for ${run.length - 2} files`);
});

function mib(n: number): string {
  return `${(n / 1048576).toFixed(0)} MiB`;
}
