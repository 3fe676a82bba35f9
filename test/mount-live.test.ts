// Live updates: backups committed by other processes appear in a running mount and
// `last` moves to them, while readers keep reading; nobody ever sees a byte that is not
// part of a committed version.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { XorShift32 } from './helpers/tree-gen.js';
import { fnv1a } from './helpers/raw-path.js';
import { runSnapfs, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground, waitFor } from './helpers/mount.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';

const FILES = Array.from({ length: 12 }, (_, i) => `dir${i % 3}/file${i}.bin`);
const STATIC = 'static.bin';

/** Version v of a file: a header naming it, then bytes only (name, v) determine. */
function content(name: string, v: number): Buffer {
  const header = Buffer.from(`file=${name} version=${v}\n`);
  const size = (fnv1a(name) % 400_000) + 20_000 + v * 777;
  return Buffer.concat([header, new XorShift32((fnv1a(name) ^ (v * 0x9e3779b1)) >>> 0).bytes(size)]);
}

function versionOf(data: Buffer): { name: string; v: number } | undefined {
  const m = /^file=(\S+) version=(\d+)\n/.exec(data.subarray(0, 200).toString('latin1'));
  return m ? { name: m[1]!, v: Number(m[2]) } : undefined;
}

async function writeVersion(src: string, v: number): Promise<void> {
  for (const f of FILES) {
    await fs.mkdir(path.dirname(path.join(src, f)), { recursive: true });
    await fs.writeFile(path.join(src, f), content(f, v));
  }
}

t.test('a reader sees new snapshots and a moving last while backups run, and only committed bytes', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-live');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, STATIC), content(STATIC, 0));
  // Never read until after prune, and bigger than the server's chunk cache: reading it
  // then must fetch chunks from packs that prune rewrote under the running mount.
  const big = new XorShift32(99).bytes(40 * 1024 * 1024);
  await fs.writeFile(path.join(src, 'big.bin'), big);
  await writeVersion(src, 1);
  await initRepo(repo);
  const first = await backup(repo, src, 'live');
  await fs.mkdir(mnt);
  await mountForeground(t, repo, mnt);

  /** Snapshot name -> the version its files have; filled as each backup returns. */
  const versionByName = new Map<string, number>([[first.name, 1]]);
  let started = 1; // versions whose backup has started (visible at most these)
  const errors: string[] = [];
  const reads = { last: 0, older: 0, bytes: 0 };
  let stop = false;
  let rng = 12345;
  const pick = <T>(a: T[]): T => {
    rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
    return a[rng % a.length]!;
  };

  const reader = (async () => {
    while (!stop && errors.length < 100) {
      try {
        const names = (await fs.readdir(path.join(mnt, 'live'))).filter((n) => n !== 'last');
        const fromLast = reads.last <= reads.older;
        const dirName = fromLast ? 'last' : pick(names);
        const file = pick([...FILES, STATIC]);
        const data = await fs.readFile(path.join(mnt, 'live', dirName, file));
        reads.bytes += data.length;
        if (fromLast) reads.last++;
        else reads.older++;
        const got = versionOf(data);
        if (!got || got.name !== file) {
          errors.push(`${dirName}/${file}: unrecognizable content`);
          continue;
        }
        if (file === STATIC) {
          if (!data.equals(content(STATIC, 0))) errors.push(`${dirName}/${file}: wrong bytes`);
          continue;
        }
        if (got.v > started) errors.push(`${dirName}/${file}: version ${got.v} read before its backup started`);
        const expectedV = versionByName.get(dirName);
        if (expectedV !== undefined && got.v !== expectedV) errors.push(`${dirName}/${file}: version ${got.v}, the snapshot holds ${expectedV}`);
        if (!data.equals(content(file, got.v))) errors.push(`${dirName}/${file}: bytes differ from version ${got.v}`);
      } catch (err) {
        errors.push(`read failed: ${(err as Error).message}`);
      }
    }
  })();

  // However the test ends, the reader stops (before the teardown unmounts).
  t.teardown(async () => {
    stop = true;
    await reader;
  });
  const moveTimes: number[] = [];
  for (let v = 2; v <= 4; v++) {
    await writeVersion(src, v);
    started = v;
    const snap = await backup(repo, src, 'live');
    const committed = Date.now();
    versionByName.set(snap.name, v);
    const moved = await waitFor(async () => (await fs.readlink(path.join(mnt, 'live', 'last'))) === snap.name, 5000, 20);
    t.ok(moved, `last moved to backup ${v} (${snap.name})`);
    moveTimes.push(Date.now() - committed);
    t.ok((await fs.readdir(path.join(mnt, 'live'))).includes(snap.name), `${snap.name} is listed`);
    // Let the reader work on the new state for a moment.
    await new Promise((r) => setTimeout(r, 300));
  }
  stop = true;
  await reader;
  t.ok(moveTimes.every((ms) => ms < 2000), `last moved within 2 s of each commit (${moveTimes.join(', ')} ms)`);
  t.same(errors.slice(0, 20), [], 'no read failed and every byte belonged to a committed version');
  t.ok(reads.last > 10 && reads.older > 10, `reads from last/ (${reads.last}) and from older snapshots (${reads.older})`);
  t.equal((await fs.readdir(path.join(mnt, 'live'))).length, 5, 'four snapshot dirs and last');
  for (const [name, v] of versionByName) {
    for (const f of FILES) {
      const data = await fs.readFile(path.join(mnt, 'live', name, f));
      if (!data.equals(content(f, v))) t.fail(`${name}/${f} is not version ${v}`);
    }
  }

  // forget and prune while mounted: forgotten snapshots disappear, kept ones read on
  // (prune deletes and repacks packs under the running mount).
  await runSnapfs(['forget', repo, '--keep-last', '2']);
  const names = [...versionByName.keys()];
  const kept = names.slice(-2);
  // A reader loop over the kept snapshots' files runs through the whole prune: every read
  // must give the right bytes, and none may fail.
  let pruning = true;
  const duringPrune = { reads: 0, errors: [] as string[] };
  const pruneReader = (async () => {
    while (pruning) {
      const name = kept[duringPrune.reads % kept.length]!;
      const f = [...FILES, STATIC][duringPrune.reads % (FILES.length + 1)]!;
      const want = f === STATIC ? content(STATIC, 0) : content(f, versionByName.get(name)!);
      try {
        const data = await fs.readFile(path.join(mnt, 'live', name, f));
        if (!data.equals(want)) duringPrune.errors.push(`${name}/${f}: wrong bytes during prune`);
      } catch (err) {
        duringPrune.errors.push(`${name}/${f}: ${(err as Error).message}`);
      }
      duringPrune.reads++;
    }
  })();
  const pruned = await runSnapfs(['prune', repo, '--repack-threshold', '1', '--json']);
  pruning = false;
  await pruneReader;
  t.comment(`prune: ${JSON.stringify(pruned.json).slice(0, 300)}`);
  t.same(duringPrune.errors.slice(0, 10), [], `${duringPrune.reads} reads through the mount during prune: right bytes, no errors`);
  t.ok(duringPrune.reads > 0, 'the reader ran during prune');
  const gone = await waitFor(async () => (await fs.readdir(path.join(mnt, 'live'))).sort().join() === [...kept, 'last'].sort().join(), 5000, 50);
  t.ok(gone, 'forgotten snapshots leave the listing');
  await t.rejects(fs.lstat(path.join(mnt, 'live', names[0]!, FILES[0]!)), { code: 'ENOENT' }, 'and their paths are gone');
  for (const name of kept) {
    for (const f of [...FILES, STATIC]) {
      const want = f === STATIC ? content(STATIC, 0) : content(f, versionByName.get(name)!);
      const data = await fs.readFile(path.join(mnt, 'live', name, f));
      if (!data.equals(want)) t.fail(`${name}/${f} changed after prune`);
    }
  }
  t.ok((await fs.readFile(path.join(mnt, 'live', kept[0]!, 'big.bin'))).equals(big), 'a file first read after prune reads right');
  t.pass('kept snapshots read the same after forget and prune');
});
