// The writer's memory is bounded whatever the size of the tree: reading waits for
// compression (lib/util/byte-budget.ts). Before, a backup's peak RSS grew with the data of
// its large files (the compression queue kept every chunk it had compressed alive): 890 MiB
// for a 1 GiB mail corpus, 1.8 GiB at 2.5 GiB, 1.06 GiB for this tree. Now 320-390 MiB for
// any of them; the bound leaves room for a busy machine (garbage collected later).
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { onTmpfs, runSnapfs, spawnSnapfs, tmpDir } from './helpers/cli.js';
import { contentManifest } from './helpers/fault.js';
import { preadCached } from '../lib/platform/native.js';

const MiB = 1024 * 1024;
/** Issue 2 asks for "e.g. < 400 MiB whatever the corpus"; see the header for the margin. */
const PEAK_RSS_BOUND = 448 * MiB;

/** Unique, half-compressible bytes: random letters (zstd takes them to ~0.6). */
function textish(n: number): Buffer {
  const b = randomBytes(n);
  for (let i = 0; i < n; i++) b[i] = 97 + (b[i]! & 15);
  return b;
}

async function writeLarge(file: string, bytes: number, make: (n: number) => Buffer): Promise<void> {
  const fh = await fsp.open(file, 'w');
  try {
    for (let at = 0; at < bytes; at += 16 * MiB) await fh.write(make(Math.min(16 * MiB, bytes - at)));
  } finally {
    await fh.close();
  }
}

/** Peak RSS (VmHWM, monotonic) of a running process, polled until it exits. */
function watchPeak(pid: number, exited: Promise<unknown>): Promise<number> {
  return new Promise((resolve) => {
    let peak = 0;
    let done = false;
    void exited.then(() => {
      done = true;
    });
    const poll = async (): Promise<void> => {
      try {
        const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
        peak = Math.max(peak, Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024);
      } catch {
        done = true; // gone
      }
      if (done) resolve(peak);
      else setTimeout(() => void poll(), 20);
    };
    void poll();
  });
}

t.test('peak RSS of a backup stays under the bound', async (t) => {
  const work = await tmpDir(t, 'backup-memory');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fsp.mkdir(path.join(src, 'big'), { recursive: true });
  await writeLarge(path.join(src, 'big', 'random-1'), 160 * MiB, randomBytes);
  await writeLarge(path.join(src, 'big', 'random-2'), 96 * MiB, randomBytes);
  await writeLarge(path.join(src, 'big', 'dump.sql'), 192 * MiB, textish);
  for (let d = 0; d < 20; d++) {
    const dir = path.join(src, 'spool', `folder-${d}`);
    await fsp.mkdir(dir, { recursive: true });
    for (let f = 0; f < 100; f++) await fsp.writeFile(path.join(dir, `${f}.`), textish(4096 + ((d * 100 + f) * 7919) % (60 * 1024)));
  }

  await runSnapfs(['init', repo]);
  const child = spawnSnapfs(['backup', repo, src, '--source', 'big', '--json']);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const peak = await watchPeak(child.pid!, exited);
  t.equal(await exited, 0, `backup succeeds ${child.output().stderr}`);
  t.ok(peak > 0, 'peak RSS was sampled');
  t.ok(peak < PEAK_RSS_BOUND, `peak RSS ${(peak / MiB).toFixed(0)} MiB < ${PEAK_RSS_BOUND / MiB} MiB`);

  // Sealed packs leave the page cache (PackWriter.seal): pages read without waiting for
  // the disk, 16 per pack, almost none answers (the advice is best effort: ext4 may still
  // hold a page of the last transaction); once a pack is read through, all do. From the
  // end backwards: a read that finds nothing starts the kernel's read-ahead from there on.
  if (onTmpfs(repo)) {
    t.pass('packs leave the page cache', { skip: 'repository on tmpfs: no page cache to leave' });
  } else {
    const packs = (await fsp.readdir(path.join(repo, 'packs'), { recursive: true })).filter((f) => f.endsWith('.pack'));
    t.ok(packs.length >= 2, `several packs written (${packs.length})`);
    const cachedPages = async (file: string): Promise<number> => {
      const fh = await fsp.open(path.join(repo, 'packs', file), 'r');
      try {
        const size = (await fh.stat()).size;
        const page = Buffer.alloc(4096);
        let cached = 0;
        for (let i = 15; i >= 0; i--) if (preadCached(fh.fd, page, Math.floor(((size - 4096) * i) / 15)) !== -1) cached++;
        return cached;
      } finally {
        await fh.close();
      }
    };
    const cached = (await Promise.all(packs.map(cachedPages))).reduce((a, b) => a + b, 0);
    t.ok(cached <= packs.length * 2, `${cached} of ${packs.length * 16} pages of the sealed packs cached after the backup`);
    await fsp.readFile(path.join(repo, 'packs', packs[0]!));
    t.equal(await cachedPages(packs[0]!), 16, 'a pack read through is cached (the check sees cached pages)');
  }

  // Bounded, and still every byte.
  const out = path.join(work, 'out');
  await runSnapfs(['restore', repo, 'big@last', out]);
  const [want, got] = await Promise.all([contentManifest(src), contentManifest(out)]);
  t.equal(got.size, want.size, 'every file restored');
  t.same([...got].filter(([p, h]) => want.get(p) !== h).map(([p]) => p), [], 'every file has the right bytes');
});
