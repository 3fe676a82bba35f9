// A damaged repository, pack by pack: flipped bytes in a data blob, a tree blob and a
// trailer; data and tree packs cut short; packs missing or emptied. Against each, every
// command runs and must end cleanly (no crash, no stack trace, a proper exit code); a
// restore or cat gives the right bytes or fails with 15, never wrong bytes; check names the
// damaged files precisely (every file it names fails to cat, every other one reads right);
// repair index (--read-data) keeps what the packs still hold; and the next backup of the
// same source heals: its snapshot is complete again and restores byte-identical.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { tmpDir } from './helpers/cli.js';
import { buildHistory, History } from './helpers/history.js';
import { assertClean, backupHonestly, catHonestly, contentManifest, copyRepo, restoreHonestly, snapfs } from './helpers/fault.js';
import { listPackFiles, readPackTrailer } from '../lib/store/pack-files.js';
import { RepoLayout } from '../lib/store/layout.js';
import { PackedBlob } from '../lib/format/pack.js';

interface Pack {
  hex: string;
  file: string;
  size: number;
  blobs: PackedBlob[];
}

async function packsOf(repo: string): Promise<Pack[]> {
  const layout = new RepoLayout(repo);
  const out: Pack[] = [];
  for (const hex of await listPackFiles(layout)) out.push({ hex, file: layout.packFile(hex), ...(await readPackTrailer(layout.packFile(hex))) });
  return out;
}

async function flip(file: string, offset: number, n = 3): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  const b = Buffer.alloc(n);
  await fh.read(b, 0, n, offset);
  for (let i = 0; i < n; i++) b[i] = b[i]! ^ 0x5a;
  await fh.write(b, 0, n, offset);
  await fh.close();
}

type Damage = (packs: { data: Pack[]; tree: Pack[] }) => Promise<void>;

const scenarios: Array<[string, Damage]> = [
  ['bytes flipped inside a data blob', async ({ data }) => {
    const p = data[0]!;
    const b = p.blobs[1] ?? p.blobs[0]!;
    await flip(p.file, b.offset + 32 + (b.storedLength >> 1));
  }],
  ['bytes flipped inside a tree blob', async ({ tree }) => {
    const p = tree[tree.length - 1]!;
    const b = p.blobs[0]!;
    await flip(p.file, b.offset + 32 + (b.storedLength >> 1));
  }],
  ['bytes flipped in a pack trailer', async ({ data }) => {
    const p = data[1]!;
    await flip(p.file, p.size - 24 - 32 * p.blobs.length + 40);
  }],
  ['a data pack cut short', async ({ data }) => {
    const p = data[2]!;
    await fsp.truncate(p.file, p.blobs[Math.floor(p.blobs.length / 2)]!.offset + 40);
  }],
  ['a tree pack cut short', async ({ tree }) => {
    const p = tree[0]!;
    await fsp.truncate(p.file, Math.floor(p.size / 2));
  }],
  ['a data pack missing', async ({ data }) => {
    await fsp.rm(data[3]!.file);
  }],
  ['a tree pack missing', async ({ tree }) => {
    await fsp.rm(tree[tree.length - 1]!.file);
  }],
  ['a pack emptied (zero bytes)', async ({ data }) => {
    await fsp.truncate(data[0]!.file, 0);
  }],
  ['a pack replaced by a directory', async ({ data }) => {
    await fsp.rm(data[1]!.file);
    await fsp.mkdir(data[1]!.file);
  }],
];

/** Paths (relative, '/'-separated) that check --read-data names for a snapshot; dirs end with '/'. */
function reported(check: any, snapshot: string): string[] {
  return (check.problems as any[]).filter((p) => p.snapshot === snapshot && (p.kind === 'file' || p.kind === 'tree')).map((p) => (p.path === '/' ? '' : p.path ?? ''));
}

function isReported(paths: string[], file: string): boolean {
  return paths.some((p) => p === file || (p.endsWith('/') || p === '' ? file.startsWith(p) : false));
}

t.test('damaged packs', async (t) => {
  const base = await tmpDir(t, 'fault-packs');
  const h: History = await buildHistory(base, { backups: 3, files: 120, bigFiles: 6, seed: 21, keepStates: true });
  const expected = new Map<string, Map<string, string>>();
  for (const s of h.snapshots) expected.set(s.name, await contentManifest(s.state!));
  const current = await contentManifest(h.src);
  let n = 0;

  for (const [label, damage] of scenarios) {
    t.test(label, async (t) => {
      const repo = await copyRepo(h.repo, join(base, `repo-${n++}`));
      const all = await packsOf(repo);
      const data = all.filter((p) => p.blobs.every((b) => b.type === 1) && p.blobs.length >= 3);
      const tree = all.filter((p) => p.blobs.every((b) => b.type === 2));
      t.ok(data.length >= 4 && tree.length >= 1, `enough packs to damage (${data.length} data, ${tree.length} tree)`);
      await damage({ data, tree });

      // Every command ends cleanly.
      assertClean(t, await snapfs(['snapshots', repo]), 'snapshots', [0]);
      assertClean(t, await snapfs(['ls', repo, 'data@last', '-R']), 'ls -R', [0, 15]);
      assertClean(t, await snapfs(['stats', repo]), 'stats', [0]);
      const quick = await snapfs(['check', repo, '--json']);
      assertClean(t, quick, 'check', [0, 15]);
      const check = await snapfs(['check', repo, '--read-data', '--json']);
      assertClean(t, check, 'check --read-data', [15]);
      t.equal(check.json?.ok, false, 'check --read-data finds the damage');

      // Right bytes or a clean failure, and check's report matches what actually fails.
      const last = h.snapshots[h.snapshots.length - 1]!;
      await restoreHonestly(t, repo, `data@${last.name}`, expected.get(last.name)!, join(base, 'out'));
      const named = reported(check.json, `data@${last.name}`);
      const files = [...expected.get(last.name)!.keys()].sort();
      const bad = files.filter((f) => isReported(named, f));
      const good = files.filter((f) => !isReported(named, f));
      const sample = (list: string[]): string[] => list.filter((_, i) => i % Math.max(1, Math.floor(list.length / 2)) === 0).slice(0, 2);
      for (const f of sample(bad)) t.equal(await catHonestly(t, repo, `data@${last.name}:${f}`, expected.get(last.name)!.get(f)!), 15, `${f}: named by check, and unreadable`);
      for (const f of sample(good)) t.equal(await catHonestly(t, repo, `data@${last.name}:${f}`, expected.get(last.name)!.get(f)!), 0, `${f}: not named by check, and reads right`);

      // Writers on the damaged repository: a backup of the same source, a prune.
      await backupHonestly(t, repo, [h.src, '--source', 'data', '--time', '2026-02-01T10:00:00Z'], 'backup into the damaged repository', [0, 3]);
      assertClean(t, await snapfs(['prune', repo]), 'prune', [0, 15]);

      // repair index keeps what the packs hold; what is lost is reported by path.
      const repair = await snapfs(['repair', 'index', repo, '--read-data', '--json']);
      assertClean(t, repair, 'repair index --read-data', [0, 3]);
      const after = await snapfs(['check', repo, '--read-data', '--json']);
      assertClean(t, after, 'check --read-data after repair', [0, 15]);
      const structural = (after.json?.problems ?? []).filter((p: any) => p.kind !== 'file' && p.kind !== 'tree');
      t.same(structural, [], 'after repair, packs and index agree: only lost files and directories are left to report');

      // The next backup heals: the snapshot it makes is complete and exact.
      const heal = await snapfs(['backup', repo, h.src, '--source', 'data', '--time', '2026-02-02T10:00:00Z', '--json']);
      assertClean(t, heal, 'backup after repair', [0]);
      const final = await snapfs(['check', repo, '--read-data', '--json']);
      assertClean(t, final, 'check --read-data after the healing backup', [0, 15]);
      t.notOk((final.json?.damagedSnapshots ?? []).includes(`data@${heal.json?.snapshot?.name}`), 'the new snapshot is intact');
      t.equal(await restoreHonestly(t, repo, 'data@last', current, join(base, 'out')), 0, 'and restores byte-identical');
      const first = h.snapshots[0]!;
      await restoreHonestly(t, repo, `data@${first.name}`, expected.get(first.name)!, join(base, 'out'));
      await fsp.rm(repo, { recursive: true, force: true });
    });
  }
});
