// repair index through the real CLI: the index is rebuilt from the packs alone, and a
// pack with a broken trailer is recovered blob by blob.

import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { runProcess, runSnapfs, tmpDir } from './helpers/cli.js';
import { assertTreesEqual } from './helpers/tree-compare.js';
import { buildHistory, History } from './helpers/history.js';
import { listPackFiles, readPackTrailer } from '../lib/store/pack-files.js';
import { RepoLayout } from '../lib/store/layout.js';

async function everySnapshotRestores(t: any, repo: string, h: History, out: string): Promise<void> {
  for (const s of h.snapshots) {
    const dir = join(out, s.name);
    await runSnapfs(['restore', repo, `data@${s.name}`, dir]);
    await assertTreesEqual(t, s.state!, dir, undefined, `data@${s.name} restores identical`);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

t.test('repair index', async (t) => {
  const base = await tmpDir(t, 'snapfs-repair');
  const h = await buildHistory(base, { backups: 3, files: 150, bigFiles: 8, seed: 9, keepStates: true });
  const before = await runSnapfs(['stats', h.repo, '--json']);
  let n = 0;
  const copy = async (): Promise<string> => {
    const dir = join(base, `copy-${n++}`);
    await runProcess('cp', ['-a', h.repo, dir]);
    return dir;
  };

  t.test('after index/ is deleted', async (t) => {
    const repo = await copy();
    await fsp.rm(join(repo, 'index'), { recursive: true });
    const refused = await runSnapfs(['check', repo], { allowFail: true });
    t.equal(refused.code, 15);
    t.match(refused.stderr, /the index is missing; run 'snapfs repair index/);

    const r = await runSnapfs(['repair', 'index', repo, '--json']);
    t.equal(r.json.packs, before.json.packs);
    t.equal(r.json.blobs, before.json.blobs);
    t.same(r.json.damaged, []);
    const stats = await runSnapfs(['stats', repo, '--json']);
    t.same({ ...stats.json, indexBytes: 0 }, { ...before.json, indexBytes: 0 }, 'same packs and blobs as before');
    await everySnapshotRestores(t, repo, h, join(base, 'out-a'));
    const check = await runSnapfs(['check', repo, '--read-data', '--json']);
    t.equal(check.json.ok, true);
    t.same(check.json.notes, []);
  });

  t.test('after the index is overwritten with garbage', async (t) => {
    const repo = await copy();
    const mdb = join(repo, 'index', 'data.mdb');
    const size = (await fsp.stat(mdb)).size;
    await fsp.writeFile(mdb, Buffer.alloc(size, 0x5a));
    const r = await runSnapfs(['repair', 'index', repo]);
    t.match(r.stdout, new RegExp(`index rebuilt from ${before.json.packs} packs: ${before.json.blobs} blobs`));
    await everySnapshotRestores(t, repo, h, join(base, 'out-b'));
    t.equal((await runSnapfs(['check', repo, '--read-data', '--json'])).json.ok, true);
  });

  t.test('packs with broken trailers are scanned blob by blob', async (t) => {
    const repo = await copy();
    const layout = new RepoLayout(repo);
    const packs = [];
    for (const hex of await listPackFiles(layout)) packs.push({ hex, file: layout.packFile(hex), ...(await readPackTrailer(layout.packFile(hex))) });
    const data = packs.filter((p) => p.blobs.length >= 3 && p.blobs.every((b) => b.type === 1));
    t.ok(data.length >= 2);
    // One pack loses only its footer: everything in it is recoverable.
    const intact = data[0]!;
    await fsp.truncate(intact.file, intact.size - 10);
    // Another loses its footer and has one damaged blob.
    const hurt = data[1]!;
    const victim = hurt.blobs[1]!;
    await fsp.truncate(hurt.file, hurt.size - 10);
    const fh = await fsp.open(hurt.file, 'r+');
    await fh.write(Buffer.from([0xff, 0x00, 0xff]), 0, 3, victim.offset + 32 + (victim.storedLength >> 1));
    await fh.close();
    await fsp.rm(join(repo, 'index'), { recursive: true });

    const r = await runSnapfs(['repair', 'index', repo, '--json'], { allowFail: true });
    t.equal(r.code, 3, 'partial: some packs were damaged');
    const byPack = Object.fromEntries(r.json.damaged.map((d: any) => [d.pack, d]));
    t.equal(byPack[intact.hex]?.recoveredBlobs, intact.blobs.length, 'every blob of the pack with a cut footer is recovered');
    t.equal(byPack[hurt.hex]?.recoveredBlobs, hurt.blobs.length - 1, 'all but the damaged blob are recovered');
    t.equal(byPack[hurt.hex]?.salvagedInto.length, 1);
    await fsp.access(`${hurt.file}.damaged`);

    const check = await runSnapfs(['check', repo, '--read-data', '--json'], { allowFail: true });
    t.equal(check.code, 15, 'the lost chunk is reported');
    const fileProblems = check.json.problems.filter((p: any) => p.kind === 'file');
    t.ok(fileProblems.length > 0);
    t.ok(fileProblems.every((p: any) => p.blob === victim.id.toString('hex') && /missing from the index/.test(p.message)), 'only the damaged chunk is missing');
    t.equal(check.json.problems.filter((p: any) => p.kind !== 'file').length, 0, 'the repository structure is sound again');

    // The first snapshot that does not use the lost chunk restores identical.
    const damagedSnaps = new Set(fileProblems.map((p: any) => p.snapshot));
    const clean = h.snapshots.filter((s) => !damagedSnaps.has(`data@${s.name}`));
    for (const s of clean) {
      const dir = join(base, 'out-c', s.name);
      await runSnapfs(['restore', repo, `data@${s.name}`, dir]);
      await assertTreesEqual(t, s.state!, dir, undefined, `data@${s.name} restores identical`);
    }
  });

  t.test('only pack trailers: a full recovery of the footer-cut pack passes check --read-data', async (t) => {
    const repo = await copy();
    const layout = new RepoLayout(repo);
    const hex = (await listPackFiles(layout))[0]!;
    const file = layout.packFile(hex);
    const { size } = await fsp.stat(file);
    await fsp.truncate(file, size - 1);
    await runSnapfs(['repair', 'index', repo], { allowFail: true });
    await everySnapshotRestores(t, repo, h, join(base, 'out-d'));
    const check = await runSnapfs(['check', repo, '--read-data', '--json']);
    t.equal(check.json.ok, true);
  });
});
