// A repository with a history: several backups of a tree that changes between them,
// for the lifecycle tests (prune, check, repair, run, disaster recovery).

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { runProcess, runSnapfs } from './cli.js';
import { XorShift32, generateSmallTree, mutateFiles } from './tree-gen.js';

export interface HistoryOptions {
  backups: number;
  /** Small files (0-16 KiB each). */
  files: number;
  /** Multi-chunk files of 150-450 KiB. */
  bigFiles: number;
  seed: number;
  source?: string;
  /** Keep a copy (cp -a) of the tree as each backup saw it, for comparisons. */
  keepStates?: boolean;
  /** First snapshot's day; one day apart. */
  firstDay?: string;
}

export interface History {
  repo: string;
  src: string;
  /** Per backup: snapshot name and, with keepStates, the copy of the tree it saw. */
  snapshots: Array<{ name: string; state?: string }>;
}

export const QUICK_REPO = ['--chunk-avg', '65536', '--pack-size', '1048576'];

export async function initRepo(repo: string): Promise<void> {
  await runSnapfs(['init', repo, ...QUICK_REPO]);
}

export async function buildHistory(base: string, opts: HistoryOptions): Promise<History> {
  const src = join(base, `src-${opts.seed}`);
  const repo = join(base, 'repo');
  const source = opts.source ?? 'data';
  const files = await generateSmallTree(src, { files: opts.files, dirs: 6, seed: opts.seed });
  await fsp.mkdir(join(src, 'big'));
  const big: string[] = [];
  const rng = new XorShift32(opts.seed);
  for (let i = 0; i < opts.bigFiles; i++) {
    const rel = `big/b${i}.bin`;
    await fsp.writeFile(join(src, rel), rng.bytes(150 * 1024 + (rng.next() % (300 * 1024))));
    big.push(rel);
  }
  const all = [...files, ...big];
  await initRepoIfMissing(repo);
  const first = Date.parse(`${opts.firstDay ?? '2026-01-01'}T10:00:00Z`);
  const snapshots: History['snapshots'] = [];
  for (let k = 0; k < opts.backups; k++) {
    if (k > 0) {
      // A quarter of the files change, a few are added and one is removed.
      const changed = all.filter((_, i) => (i * 7 + k * 13) % 4 === 0);
      await mutateFiles(src, changed, opts.seed + k);
      for (let j = 0; j < 5; j++) await fsp.writeFile(join(src, `d000/new-${k}-${j}.dat`), rng.bytes(rng.next() % 20000));
      const [gone] = all.splice((k * 11) % all.length, 1);
      await fsp.rm(join(src, gone!));
    }
    const time = new Date(first + k * 86_400_000).toISOString();
    const r = await runSnapfs(['backup', repo, src, '--source', source, '--time', time, '--json']);
    const entry: { name: string; state?: string } = { name: r.json.snapshot.name };
    if (opts.keepStates) {
      entry.state = join(base, `state-${source.replace(/\//g, '_')}-${k}`);
      await runProcess('cp', ['-a', src, entry.state]);
    }
    snapshots.push(entry);
  }
  return { repo, src, snapshots };
}

async function initRepoIfMissing(repo: string): Promise<void> {
  try {
    await fsp.access(join(repo, 'config.json'));
  } catch {
    await initRepo(repo);
  }
}

/** Bytes of all pack files (what du would count, without block rounding). */
export async function packBytes(repo: string): Promise<number> {
  let total = 0;
  for (const d of await fsp.readdir(join(repo, 'packs'))) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const f of await fsp.readdir(join(repo, 'packs', d))) {
      if (f.endsWith('.pack')) total += (await fsp.stat(join(repo, 'packs', d, f))).size;
    }
  }
  return total;
}
