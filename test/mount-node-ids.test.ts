// Node ids are 64-bit hashes of (snapshot, path): two entries the kernel holds at once
// could, very rarely, hash alike. The mount must then never serve one entry's attributes
// or bytes for the other: a read answers either the right bytes or EIO. Here the ids are
// cut to a few bits (SNAPFS_TEST_NODE_ID_BITS) so that a small tree collides many times.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground } from './helpers/mount.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';

interface Tally {
  right: number;
  eio: number;
  wrong: string[];
  other: string[];
}

/** Reads every file under `mnt` that `src` has, judging each read against the source. */
async function readAll(src: string, mnt: string, rel: string[], tally: Tally, pass: string): Promise<void> {
  for (const r of rel) {
    const want = await fs.readFile(path.join(src, r));
    try {
      const st = await fs.stat(path.join(mnt, r));
      const got = await fs.readFile(path.join(mnt, r));
      if (st.size === want.length && got.equals(want)) tally.right++;
      else tally.wrong.push(`${pass} ${r}: size ${st.size}, ${got.length} bytes read (of ${got.toString().split('\n')[0]}), want ${want.length}`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      if (code === 'EIO') tally.eio++;
      else tally.other.push(`${r}: ${code}`);
    }
  }
}

/** Drops the kernel's dentries and inodes: it forgets their nodes, whose ids come free. */
async function forgetAll(): Promise<void> {
  await runProcess('sh', ['-c', 'sync; echo 2 > /proc/sys/vm/drop_caches'], { allowFail: true }); // root only
}

// 12 bits: 1,860 entries in 4,096 ids, so most are alone and hundreds collide; 10 bits:
// nearly every id is shared.
const cases = [
  ['low-level binding', [], '12'],
  ['low-level binding', [], '10'],
  ['fuse-native (--nfs)', ['--nfs'], '12'],
] as const;
for (const [binding, extra, bits] of cases) {
  t.test(`colliding node ids give EIO, never another entry's bytes: ${binding}, ${bits}-bit ids`, { skip }, async (t) => {
    const work = await tmpDir(t, 'node-ids');
    const src = path.join(work, 'src');
    const day1 = path.join(work, 'day1');
    const repo = path.join(work, 'repo');
    const mnt = path.join(work, 'mnt');
    const rel: string[] = [];
    for (let d = 0; d < 30; d++) {
      await fs.mkdir(path.join(src, `d${d}`), { recursive: true });
      for (let f = 0; f < 30; f++) {
        const r = path.join(`d${d}`, `f${f}`);
        rel.push(r);
        // Distinct sizes and bytes: a file served as another is caught either way.
        await fs.writeFile(path.join(src, r), `${r}\n`.repeat(1 + ((d * 31 + f * 7) % 50)));
      }
    }
    await initRepo(repo);
    await backup(repo, src, 'ids', '2026-01-01T12:00:00Z');
    await runProcess('cp', ['-a', src, day1]);
    // Day 2: a third of the files changed (new versions, new inode numbers).
    for (const [i, r] of rel.entries()) if (i % 3 === 0) await fs.appendFile(path.join(src, r), `changed ${r}\n`);
    await backup(repo, src, 'ids', '2026-01-02T12:00:00Z');
    await fs.mkdir(mnt);
    await mountForeground(t, repo, mnt, [...extra], { SNAPFS_TEST_NODE_ID_BITS: bits });
    const snap1 = path.join(mnt, 'ids', '2026-01-01');
    const snap2 = path.join(mnt, 'ids', 'last');

    const tally: Tally = { right: 0, eio: 0, wrong: [], other: [] };
    // Listings first (readdir replies carry nodes, lookups answered by the binding), then
    // files one by one; the kernel's forgets in between free ids that other names then take.
    await runProcess('ls', ['-lR', snap1 + '/'], { allowFail: true });
    await readAll(day1, snap1, rel, tally, 'pass 1');
    await readAll(src, snap2, [...rel].reverse(), tally, 'pass 2');
    await forgetAll();
    await runProcess('ls', ['-lR', snap2 + '/'], { allowFail: true });
    await readAll(src, snap2, rel, tally, 'pass 3');
    await readAll(day1, snap1, [...rel].sort(), tally, 'pass 4');
    await forgetAll();
    await readAll(day1, snap1, [...rel].reverse(), tally, 'pass 5');
    await readAll(src, snap2, [...rel].sort(), tally, 'pass 6'); // directory order: files read ahead
    // cp -a reads in directory order too; it goes on past the refused files.
    await forgetAll();
    const out = path.join(work, 'out');
    await runProcess('cp', ['-a', snap1 + '/', out], { allowFail: true });
    let copied = 0;
    for (const r of rel) {
      const got = await fs.readFile(path.join(out, r)).catch(() => undefined);
      if (!got) continue;
      copied++;
      if (!got.equals(await fs.readFile(path.join(day1, r)))) tally.wrong.push(`cp -a ${r}: other bytes`);
    }
    t.ok(copied > 0, `cp -a copied ${copied} files`);
    t.same(tally.wrong.slice(0, 20), [], 'no read gives another entry\'s size or bytes');
    t.same(tally.other.slice(0, 20), [], 'no read fails otherwise');
    t.ok(tally.eio > 0, `collisions were met (${tally.eio} reads gave EIO)`);
    t.ok(tally.right > rel.length, `reads of entries whose id is free succeed (${tally.right} of ${6 * rel.length})`);
  });
}
