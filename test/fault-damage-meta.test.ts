// A damaged repository outside the packs: the LMDB index (truncated, emptied, garbage,
// damaged pages, flipped bits, missing), config.json (missing, garbage, cut short, another
// repository's), snapshot records (garbage, cut short) and the lock file. Every command must
// end cleanly with a message that says what to do; nothing reads wrong bytes; and the
// documented remedy (repair index, or putting config.json back) brings back every snapshot
// byte-identical with check --read-data passing.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { tmpDir } from './helpers/cli.js';
import { buildHistory, History, initRepo } from './helpers/history.js';
import { assertClean, backupHonestly, catHonestly, contentManifest, copyRepo, restoreHonestly, snapfs } from './helpers/fault.js';

type Remedy = 'repair index' | 'restore config' | 'none';

interface Scenario {
  label: string;
  damage: (repo: string, other: string) => Promise<void>;
  /** Exit codes the read commands may give on the damaged repository. */
  readExits: number[];
  /** A regular expression the failing commands' message must match. */
  says?: RegExp;
  remedy: Remedy;
  /**
   * Damage inside LMDB's pages: LMDB trusts them, and a command that opens such an index may
   * die of SIGSEGV, SIGBUS or SIGABRT (a documented limitation; repair index never opens it).
   */
  lmdbPages?: boolean;
}

async function mutateFile(file: string, fn: (b: Buffer) => Buffer): Promise<void> {
  await fsp.writeFile(file, fn(await fsp.readFile(file)));
}

const REPAIR = /repair index/;
const CONFIG = /config\.json/;

const scenarios: Scenario[] = [
  { label: 'index data.mdb cut in half', damage: (r) => mutateFile(join(r, 'index/data.mdb'), (b) => b.subarray(0, b.length >> 1)), readExits: [15], says: REPAIR, remedy: 'repair index' },
  { label: 'index data.mdb cut to 5000 bytes', damage: (r) => mutateFile(join(r, 'index/data.mdb'), (b) => b.subarray(0, 5000)), readExits: [15], says: REPAIR, remedy: 'repair index' },
  { label: 'index data.mdb emptied', damage: (r) => fsp.truncate(join(r, 'index/data.mdb'), 0), readExits: [15], says: REPAIR, remedy: 'repair index' },
  { label: 'index data.mdb all garbage', damage: (r) => mutateFile(join(r, 'index/data.mdb'), (b) => randomBytes(b.length)), readExits: [15], says: REPAIR, remedy: 'repair index' },
  {
    label: 'index data.mdb pages after the meta pages garbage',
    damage: (r) => mutateFile(join(r, 'index/data.mdb'), (b) => Buffer.concat([b.subarray(0, 8192), randomBytes(b.length - 8192)])),
    readExits: [0, 15], remedy: 'repair index', lmdbPages: true,
  },
  {
    label: 'index data.mdb with 40 flipped bits',
    damage: (r) => mutateFile(join(r, 'index/data.mdb'), (b) => {
      for (let i = 0; i < 40; i++) b[randomBytes(4).readUInt32LE(0) % b.length]! ^= 1 << (i % 8);
      return b;
    }),
    readExits: [0, 15], remedy: 'repair index', lmdbPages: true,
  },
  { label: 'index directory missing', damage: (r) => fsp.rm(join(r, 'index'), { recursive: true }), readExits: [15], says: REPAIR, remedy: 'repair index' },
  { label: 'lock file garbage', damage: (r) => fsp.writeFile(join(r, 'lock'), randomBytes(300)), readExits: [0], remedy: 'none' },
  { label: 'index lock.mdb garbage', damage: (r) => mutateFile(join(r, 'index/lock.mdb'), (b) => randomBytes(b.length)), readExits: [0], remedy: 'none' },
  { label: 'config.json missing', damage: (r) => fsp.rm(join(r, 'config.json')), readExits: [15], says: CONFIG, remedy: 'restore config' },
  { label: 'config.json garbage', damage: (r) => fsp.writeFile(join(r, 'config.json'), randomBytes(700)), readExits: [15], says: CONFIG, remedy: 'restore config' },
  { label: 'config.json cut short', damage: (r) => mutateFile(join(r, 'config.json'), (b) => b.subarray(0, b.length >> 1)), readExits: [15], says: CONFIG, remedy: 'restore config' },
  {
    label: 'config.json with a damaged hash secret',
    damage: (r) => mutateFile(join(r, 'config.json'), (b) => Buffer.from(b.toString().replace(/"hashSecret": "([0-9a-f]{6})/, '"hashSecret": "zz$1'))),
    readExits: [15], says: CONFIG, remedy: 'restore config',
  },
  {
    label: "config.json of another repository (a different secret)",
    damage: (r, other) => fsp.copyFile(join(other, 'config.json'), join(r, 'config.json')),
    readExits: [0, 15], remedy: 'restore config',
  },
];

t.test('damaged index, config and records', async (t) => {
  const base = await tmpDir(t, 'fault-meta');
  const h: History = await buildHistory(base, { backups: 2, files: 80, bigFiles: 4, seed: 33, keepStates: true });
  const other = join(base, 'other-repo');
  await initRepo(other);
  const expected = new Map<string, Map<string, string>>();
  for (const s of h.snapshots) expected.set(s.name, await contentManifest(s.state!));
  const last = h.snapshots[h.snapshots.length - 1]!;
  const lastFiles = [...expected.get(last.name)!.keys()].sort();
  const probes = [lastFiles[0]!, lastFiles.find((f) => f.startsWith('big/'))!];
  let n = 0;

  for (const sc of scenarios) {
    t.test(sc.label, async (t) => {
      const repo = await copyRepo(h.repo, join(base, `repo-${n++}`));
      await sc.damage(repo, other);
      const crashes: string[] = [];
      const co = sc.lmdbPages ? { signals: ['SIGSEGV', 'SIGBUS', 'SIGABRT'], crashes } : {};
      const reads: Array<[string, string[]]> = [
        ['snapshots', ['snapshots', repo, '--json']],
        ['ls -R', ['ls', repo, 'data@last', '-R']],
        ['stats', ['stats', repo]],
        ['check', ['check', repo, '--json']],
      ];
      for (const [label, args] of reads) {
        const r = await snapfs(args);
        assertClean(t, r, label, sc.readExits, co);
        if (r.code !== 0 && sc.says) t.match(r.stderr, sc.says, `${label}: the message says what to do`);
      }
      for (const f of probes) await catHonestly(t, repo, `data@${last.name}:${f}`, expected.get(last.name)!.get(f)!, co);
      await restoreHonestly(t, repo, `data@${last.name}`, expected.get(last.name)!, join(base, 'out'), co);

      // Writers refuse or work; they never make things worse.
      await backupHonestly(t, repo, [h.src, '--source', 'data', '--time', '2026-02-01T10:00:00Z'], 'backup', sc.remedy === 'none' ? [0] : [0, 3, 15], co);
      assertClean(t, await snapfs(['prune', repo]), 'prune', sc.remedy === 'none' ? [0] : [0, 15], co);
      if (crashes.length) t.comment(`LMDB crashed on its damaged pages (known limitation): ${crashes.join(', ')}`);

      if (sc.remedy === 'restore config') {
        const r = await snapfs(['repair', 'index', repo]);
        assertClean(t, r, 'repair index without the right config', [0, 3, 15]);
        await fsp.copyFile(join(h.repo, 'config.json'), join(repo, 'config.json'));
        await fsp.chmod(join(repo, 'config.json'), 0o600);
      }
      if (sc.remedy !== 'none') assertClean(t, await snapfs(['repair', 'index', repo]), 'repair index', [0]);

      // The remedy brings every snapshot back, byte for byte.
      const check = await snapfs(['check', repo, '--read-data', '--json']);
      assertClean(t, check, 'check --read-data after the remedy', [0]);
      for (const s of h.snapshots) t.equal(await restoreHonestly(t, repo, `data@${s.name}`, expected.get(s.name)!, join(base, 'out')), 0, `data@${s.name} restores identical`);
      await fsp.rm(repo, { recursive: true, force: true });
    });
  }

  t.test('snapshot records garbage or cut short', async (t) => {
    const repo = await copyRepo(h.repo, join(base, 'repo-records'));
    const records = (await fsp.readdir(join(repo, 'snapshots'))).filter((f) => f.endsWith('.json')).sort();
    t.equal(records.length, 2);
    await fsp.writeFile(join(repo, 'snapshots', records[0]!), randomBytes(200));
    await mutateFile(join(repo, 'snapshots', records[1]!), (b) => b.subarray(0, b.length - 30));
    const list = await snapfs(['snapshots', repo, '--json']);
    assertClean(t, list, 'snapshots', [15]);
    t.equal(list.json?.damaged?.length, 2, 'both unreadable records are listed as damaged');
    t.match(list.stderr, /unreadable snapshot record/, 'and named on stderr');
    assertClean(t, await snapfs(['ls', repo, 'data@last']), 'ls of a source whose records are unreadable', [14]);
    const all = await snapfs(['restore', repo, '--all-sources', '@last', join(base, 'all-out'), '--json']);
    assertClean(t, all, 'restore --all-sources', [3]);
    t.equal(all.json?.sources?.filter((s: any) => s.status === 'failed').length, 2, 'restore --all-sources reports both as failed');
    const check = await snapfs(['check', repo, '--json']);
    assertClean(t, check, 'check', [15]);
    t.equal(check.json?.problems?.filter((p: any) => p.kind === 'snapshot').length, 2, 'check names both records');
    const prune = await snapfs(['prune', repo]);
    assertClean(t, prune, 'prune', [15]);
    t.match(prune.stderr, /prune refused/, 'prune refuses: what the lost records reference is unknown');
    await backupHonestly(t, repo, [h.src, '--source', 'data'], 'backup', [0]);
  });
});
