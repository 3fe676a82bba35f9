// Prune through the real CLI: space comes back, the kept snapshot stays byte-identical,
// and SIGKILL at random moments never leaves a repository that check rejects.

import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { runProcess, runSnapfs, spawnSnapfs, tmpDir } from './helpers/cli.js';
import { assertTreesEqual } from './helpers/tree-compare.js';
import { XorShift32 } from './helpers/tree-gen.js';
import { buildHistory, initRepo, packBytes } from './helpers/history.js';

async function restoreAndCompare(t: any, repo: string, spec: string, expected: string, out: string): Promise<void> {
  await runSnapfs(['restore', repo, spec, out]);
  await assertTreesEqual(t, expected, out, undefined, `${spec} restores identical`);
  await fsp.rm(out, { recursive: true, force: true });
}

t.test('forget all but the newest of 5 backups, prune: size of a fresh repository, identical restore', async (t) => {
  const base = await tmpDir(t, 'snapfs-prune');
  const h = await buildHistory(base, { backups: 5, files: 300, bigFiles: 12, seed: 7 });
  const before = await packBytes(h.repo);

  await runSnapfs(['forget', h.repo, '--keep-last', '1']);
  t.equal(await packBytes(h.repo), before, 'forget alone frees nothing');

  const dry = await runSnapfs(['prune', h.repo, '--dry-run', '--json']);
  t.equal(dry.json.dryRun, true);
  t.ok(dry.json.packs.deleted + dry.json.packs.repacked > 0, 'dry run finds work');
  t.equal(await packBytes(h.repo), before, 'dry run changes nothing');

  const r = await runSnapfs(['prune', h.repo, '--json']);
  t.equal(r.json.snapshots, 1);
  t.ok(r.json.bytes.freed > 0);
  const after = await packBytes(h.repo);
  t.equal(after, r.json.bytes.after, 'reported size is the size on disk');

  const fresh = join(base, 'fresh');
  await initRepo(fresh);
  await runSnapfs(['backup', fresh, h.src, '--source', 'data']);
  const freshBytes = await packBytes(fresh);
  t.comment(`packs: ${before} before, ${after} after prune, ${freshBytes} in a fresh repository`);
  t.ok(after <= freshBytes * 1.1, `pruned repository (${after}) within 10% of a fresh one (${freshBytes})`);
  t.ok(after >= freshBytes * 0.9, 'and not suspiciously smaller');

  await restoreAndCompare(t, h.repo, `data@${h.snapshots[4]!.name}`, h.src, join(base, 'out'));
  const check = await runSnapfs(['check', h.repo, '--read-data', '--json']);
  t.equal(check.json.ok, true);

  const again = await runSnapfs(['prune', h.repo, '--json']);
  t.equal(again.json.packs.deleted + again.json.packs.repacked + again.json.packs.unreferenced, 0, 'a second prune has nothing to do');
});

t.test('prune killed at random moments leaves a valid repository', async (t) => {
  const base = await tmpDir(t, 'snapfs-prune-kill');
  const h = await buildHistory(base, { backups: 5, files: 400, bigFiles: 30, seed: 11 });
  await runSnapfs(['forget', h.repo, '--keep-last', '1']);
  const kept = `data@${h.snapshots[4]!.name}`;

  // Kills are timed from the moment the prune holds the writer lock (its pid appears in
  // the lock file), so that they land in the work itself whatever node's start-up costs.
  const lockedBy = async (repo: string, pid: number): Promise<boolean> =>
    (await fsp.readFile(join(repo, 'lock'), 'utf8').catch(() => '')).includes(`"pid":${pid},`);
  const startPrune = async (repo: string) => {
    const child = spawnSnapfs(['prune', repo]);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    let done = false;
    void exited.then(() => (done = true));
    while (!done && !(await lockedBy(repo, child.pid!))) await new Promise((r) => setTimeout(r, 2));
    return { child, exited, lockedAt: Date.now() };
  };
  const probe = join(base, 'probe');
  await runProcess('cp', ['-a', h.repo, probe]);
  const p = await startPrune(probe);
  t.equal((await p.exited).code, 0);
  const work = Date.now() - p.lockedAt;
  t.comment(`a prune works ${work} ms once it holds the lock`);

  const rng = new XorShift32(2026);
  let killed = 0;
  let midway = 0;
  const iterations = 12;
  for (let i = 0; i < iterations; i++) {
    const repo = join(base, `kill-${i}`);
    await runProcess('cp', ['-a', h.repo, repo]);
    const { child, exited } = await startPrune(repo);
    // Within the first 70% of the probe's work time: a loaded machine's prunes vary, and a
    // kill after the prune has finished tests nothing.
    const delay = Math.round((rng.next() / 2 ** 32) * work * 0.7);
    const timer = setTimeout(() => child.kill('SIGKILL'), delay);
    const { code, signal } = await exited;
    clearTimeout(timer);
    if (signal === 'SIGKILL') killed++;
    else t.equal(code, 0, `iteration ${i}: prune finished before the kill at ${delay} ms: ${child.output().stderr}`);

    const check = await runSnapfs(['check', repo, '--read-data', '--json'], { allowFail: true });
    t.equal(check.code, 0, `iteration ${i} (kill ${delay} ms into the work, ${signal ?? 'exit ' + code}): check --read-data accepts the repository`);
    if (check.code !== 0) t.comment(check.stdout);
    // Unreferenced packs: killed between sealing new packs and unlinking old ones.
    if (check.json?.notes?.length) midway++;
    await restoreAndCompare(t, repo, kept, h.src, join(base, `out-${i}`));

    // The next prune cleans up whatever the killed one left.
    await runSnapfs(['prune', repo]);
    const recheck = await runSnapfs(['check', repo, '--read-data', '--json'], { allowFail: true });
    t.equal(recheck.code, 0, `iteration ${i}: valid after a complete prune`);
    t.same(recheck.json.notes, [], `iteration ${i}: nothing unreferenced left`);
    await fsp.rm(repo, { recursive: true, force: true });
  }
  t.comment(`${killed} of ${iterations} prunes were killed before they finished, ${midway} of them in the middle of the sweep`);
  t.ok(killed >= iterations / 2, 'most iterations really were interrupted');
});

t.test('prune refuses to run when a snapshot tree cannot be read', async (t) => {
  const base = await tmpDir(t, 'snapfs-prune-refuse');
  const h = await buildHistory(base, { backups: 2, files: 20, bigFiles: 1, seed: 3 });
  // Lose every tree pack: what the snapshots reference can no longer be known.
  const check = await runSnapfs(['check', h.repo, '--json']);
  t.equal(check.json.ok, true);
  const { readPackTrailer } = await import('../lib/store/pack-files.js');
  let removed = 0;
  for (const d of await fsp.readdir(join(h.repo, 'packs'))) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const f of await fsp.readdir(join(h.repo, 'packs', d))) {
      const file = join(h.repo, 'packs', d, f);
      if ((await readPackTrailer(file)).blobs.every((b) => b.type === 2)) {
        await fsp.rm(file);
        removed++;
      }
    }
  }
  t.ok(removed > 0);
  const before = await packBytes(h.repo);
  const r = await runSnapfs(['prune', h.repo], { allowFail: true });
  t.equal(r.code, 15);
  t.match(r.stderr, /prune refused: .*cannot be read/);
  t.equal(await packBytes(h.repo), before, 'nothing deleted');
});

t.test('an index that lost packs holding live data: prune refuses and deletes nothing; repair index brings all back', async (t) => {
  const base = await tmpDir(t, 'snapfs-prune-lostindex');
  const h = await buildHistory(base, { backups: 3, files: 120, bigFiles: 4, seed: 21 });
  await runSnapfs(['forget', h.repo, '--keep-last', '1']);
  const before = await packBytes(h.repo);

  // What a damaged LMDB page can do: the index forgets some data packs (entries and all),
  // while the pack files, which hold chunks the kept snapshot needs, stay on disk.
  const { Repository } = await import('../lib/store/repository.js');
  const { readPackTrailer } = await import('../lib/store/pack-files.js');
  const { idFromHex } = await import('../lib/format/blob-id.js');
  const repo = await Repository.open(h.repo);
  let dropped = 0;
  try {
    for (const d of await fsp.readdir(join(h.repo, 'packs'))) {
      if (!/^[0-9a-f]{2}$/.test(d)) continue;
      for (const f of await fsp.readdir(join(h.repo, 'packs', d))) {
        const { blobs } = await readPackTrailer(join(h.repo, 'packs', d, f));
        if (dropped >= 2 || !blobs.some((b) => b.type === 1)) continue;
        await repo.index.replacePacks([], [idFromHex(f.replace(/\.pack$/, ''))], blobs.map((b) => b.id));
        dropped++;
      }
    }
    await repo.index.flushed();
  } finally {
    await repo.close();
  }
  t.equal(dropped, 2, 'two data packs dropped from the index');

  const r = await runSnapfs(['prune', h.repo], { allowFail: true });
  t.equal(r.code, 15, 'prune fails with the corrupt-data exit code');
  t.match(r.stderr, /prune refused: pack [0-9a-f]+ holds blob [0-9a-f]+, which a snapshot references but the index does not place there/);
  t.match(r.stderr, /repair index/, 'and says what to do');
  t.equal(await packBytes(h.repo), before, 'no pack was deleted');
  const dry = await runSnapfs(['prune', h.repo, '--dry-run'], { allowFail: true });
  t.equal(dry.code, 15, 'a dry run says the same');

  await runSnapfs(['repair', 'index', h.repo]);
  const check = await runSnapfs(['check', h.repo, '--read-data', '--json']);
  t.equal(check.json.ok, true, 'after repair index, check --read-data passes');
  const pruned = await runSnapfs(['prune', h.repo, '--json']);
  t.ok(pruned.json.bytes.freed > 0, 'then prune frees space');
  await restoreAndCompare(t, h.repo, 'data@last', h.src, join(base, 'out'));
});
