// Power loss: SIGKILL of repair index and of prune at random points (the CI loop is short;
// SNAPFS_KILL_ITERATIONS runs more), and a repository's whole life of backups, forgets,
// prunes and repairs with kills among them. After every kill the repository is valid: the
// next run of the killed command completes, check --read-data passes, and every committed
// snapshot restores byte-identical.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { spawnSnapfs, tmpDir } from './helpers/cli.js';
import { XorShift32, generateSmallTree, mutateFiles } from './helpers/tree-gen.js';
import { buildHistory, initRepo } from './helpers/history.js';
import { assertClean, contentManifest, copyRepo, restoreHonestly, snapfs } from './helpers/fault.js';
import { listPackFiles, readPackTrailer } from '../lib/store/pack-files.js';
import { RepoLayout } from '../lib/store/layout.js';

const ITERATIONS = Number(process.env.SNAPFS_KILL_ITERATIONS ?? 8);

/** Whether `pid` holds the repository's writer lock (its note names the holder). */
async function lockedBy(repo: string, pid: number): Promise<boolean> {
  return (await fsp.readFile(join(repo, 'lock'), 'utf8').catch(() => '')).includes(`"pid":${pid},`);
}

interface Killed {
  killed: boolean;
  code: number | null;
  stdout: string;
  stderr: string;
  /** ms from taking the lock to the end (exit or kill). */
  workedMs: number;
}

/**
 * Runs a snapfs command and, `delayMs` after it takes the writer lock (so that the kill lands
 * in the work, whatever node's start-up costs), kills it with SIGKILL. delayMs < 0: no kill.
 */
async function runAndKill(args: string[], repo: string, delayMs: number): Promise<Killed> {
  const child = spawnSnapfs(args);
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let done = false;
  void exited.then(() => (done = true));
  while (!done && !(await lockedBy(repo, child.pid!))) await new Promise((r) => setTimeout(r, 2));
  const locked = Date.now();
  const timer = delayMs >= 0 ? setTimeout(() => child.kill('SIGKILL'), delayMs) : undefined;
  const { code, signal } = await exited;
  clearTimeout(timer);
  const out = child.output();
  return { killed: signal === 'SIGKILL', code, stdout: out.stdout, stderr: out.stderr, workedMs: Date.now() - locked };
}

t.test('repair index killed at random points', async (t) => {
  const base = await tmpDir(t, 'kill-repair');
  const h = await buildHistory(base, { backups: 3, files: 200, bigFiles: 10, seed: 41, keepStates: true });
  const expected = await Promise.all(h.snapshots.map(async (s) => ({ name: s.name, files: await contentManifest(s.state!) })));
  // Give repair real work: a pack without its footer (salvaged into a new pack) and no index.
  const layout = new RepoLayout(h.repo);
  const hex = (await listPackFiles(layout))[0]!;
  const { size } = await readPackTrailer(layout.packFile(hex));
  await fsp.truncate(layout.packFile(hex), size - 7);
  await fsp.rm(join(h.repo, 'index'), { recursive: true });

  const probe = await copyRepo(h.repo, join(base, 'probe'));
  const p = await runAndKill(['repair', 'index', probe], probe, -1);
  t.equal(p.code, 3, 'an uninterrupted repair finds the damaged pack');
  t.comment(`repair works ${p.workedMs} ms once it holds the lock`);

  const rng = new XorShift32(2027);
  let killed = 0;
  // Kill times scale with how long a repair takes; a probe slowed by a busy machine would
  // put them after the end of later, faster runs, so each run that finished first rescales.
  let span = p.workedMs;
  for (let i = 0; i < ITERATIONS; i++) {
    const repo = await copyRepo(h.repo, join(base, `kill-${i}`));
    const delay = Math.round((rng.next() / 2 ** 32) * span * 1.1);
    const r = await runAndKill(['repair', 'index', repo], repo, delay);
    if (r.killed) killed++;
    else {
      t.ok(r.code === 0 || r.code === 3, `iteration ${i}: finished before the kill at ${delay} ms`);
      span = Math.min(span, r.workedMs);
    }
    // Whatever state it was killed in, commands fail cleanly or work.
    assertClean(t, await snapfs(['snapshots', repo]), `iteration ${i}: snapshots after the kill at ${delay} ms`, [0, 15]);
    const again = await snapfs(['repair', 'index', repo, '--json']);
    assertClean(t, again, `iteration ${i}: repair index runs again`, [0, 3]);
    const check = await snapfs(['check', repo, '--read-data', '--json']);
    assertClean(t, check, `iteration ${i}: check --read-data`, [0]);
    for (const e of expected) t.equal(await restoreHonestly(t, repo, `data@${e.name}`, e.files, join(base, 'out')), 0, `iteration ${i}: data@${e.name} identical`);
    assertClean(t, await snapfs(['prune', repo]), `iteration ${i}: prune`, [0]);
    const clean = await snapfs(['check', repo, '--read-data', '--json']);
    assertClean(t, clean, `iteration ${i}: check after prune`, [0]);
    t.same(clean.json?.notes, [], `iteration ${i}: no leftovers of the killed repair after prune`);
    await fsp.rm(repo, { recursive: true, force: true });
  }
  t.comment(`${killed} of ${ITERATIONS} repairs were killed before they finished`);
  t.ok(killed >= ITERATIONS / 2, 'most iterations were really interrupted');
});

t.test("a repository's life with kills: backup, forget, prune and repair index interrupted at random", async (t) => {
  const base = await tmpDir(t, 'kill-life');
  const src = join(base, 'src');
  const repo = join(base, 'repo');
  const files = await generateSmallTree(src, { files: 250, dirs: 8, seed: 5 });
  const rng = new XorShift32(99);
  await fsp.mkdir(join(src, 'big'));
  for (let i = 0; i < 4; i++) await fsp.writeFile(join(src, 'big', `b${i}.bin`), rng.bytes(3 * 1024 * 1024 + (rng.next() % 100_000)));
  await initRepo(repo);

  const committed = new Map<string, { name: string; files: Map<string, string> }>(); // snapshot id -> what it saw
  const kills: Record<string, number> = { backup: 0, prune: 0, repair: 0 };
  const steps = ITERATIONS * 2;
  for (let i = 0; i < steps; i++) {
    await mutateFiles(src, files.filter((_, k) => (k + i) % 9 === 0), 1000 + i);
    await fsp.writeFile(join(src, 'big', `b${i % 4}.bin`), rng.bytes(3 * 1024 * 1024 + (rng.next() % 100_000)));
    const seen = await contentManifest(src);
    const time = new Date(Date.UTC(2026, 0, 1 + i, 10)).toISOString();
    const b = await runAndKill(['backup', repo, src, '--source', 'life', '--time', time, '--json'], repo, rng.next() % 2 ? Math.round(rng.next() % 1200) : -1);
    if (b.killed) {
      kills.backup!++;
      // Killed after its commit point (the record's rename) but before it exited, the
      // snapshot exists, and must be complete: it joins the committed ones.
      const after = (await snapfs(['snapshots', repo, '--json'])).json?.snapshots ?? [];
      const fresh = after.filter((s: any) => !committed.has(s.id));
      t.ok(fresh.length <= 1, `step ${i}: a killed backup leaves at most its own snapshot`);
      for (const s of fresh) {
        committed.set(s.id, { name: s.name, files: seen });
        t.comment(`step ${i}: the backup was killed after its commit point; ${s.name} exists and is checked like the others`);
      }
    } else {
      t.equal(b.code, 0, `step ${i}: backup`);
      const snap = JSON.parse(b.stdout).snapshot;
      committed.set(snap.id, { name: snap.name, files: seen });
    }
    if (i % 3 === 2) {
      const f = await snapfs(['forget', repo, '--keep-last', '3', '--json']);
      assertClean(t, f, `step ${i}: forget`, [0]);
      for (const s of f.json?.snapshots ?? []) if (s.action === 'remove') committed.delete(s.id);
      const p = await runAndKill(['prune', repo], repo, rng.next() % 2 ? Math.round(rng.next() % 600) : -1);
      if (p.killed) kills.prune!++;
      else t.equal(p.code, 0, `step ${i}: prune`);
    }
    if (i % 4 === 3) {
      const r = await runAndKill(['repair', 'index', repo], repo, rng.next() % 2 ? Math.round(rng.next() % 400) : -1);
      if (r.killed) {
        kills.repair!++;
        // Killed between removing the old index and renaming the new one, there is no index:
        // every command says to run repair again, which is what an operator does.
        const s = await snapfs(['snapshots', repo]);
        assertClean(t, s, `step ${i}: snapshots after a killed repair`, [0, 15]);
        if (s.code === 15) assertClean(t, await snapfs(['repair', 'index', repo]), `step ${i}: repair again`, [0]);
      } else t.equal(r.code, 0, `step ${i}: repair index`);
    }
    const list = await snapfs(['snapshots', repo, '--json']);
    assertClean(t, list, `step ${i}: snapshots`, [0]);
    t.same((list.json?.snapshots ?? []).map((s: any) => s.id).sort(), [...committed.keys()].sort(), `step ${i}: exactly the committed, unforgotten snapshots exist`);
    const check = await snapfs(['check', repo, '--read-data', '--json']);
    assertClean(t, check, `step ${i}: check --read-data`, [0]);
  }
  t.comment(`killed: ${kills.backup} backups, ${kills.prune} prunes, ${kills.repair} repairs`);
  for (const [id, c] of committed) t.equal(await restoreHonestly(t, repo, `life@${id}`, c.files, join(base, 'out')), 0, `life@${c.name} (${id.slice(0, 8)}) restores identical`);
  assertClean(t, await snapfs(['prune', repo]), 'a final prune', [0]);
  const final = await snapfs(['check', repo, '--read-data', '--json']);
  assertClean(t, final, 'check --read-data at the end', [0]);
  t.same(final.json?.notes, [], 'nothing left over from the kills');
});
