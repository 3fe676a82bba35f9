// check through the real CLI: each kind of damage is found and reported with the
// snapshot and path it hurts; a healthy repository reports nothing.

import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { runProcess, runSnapfs, tmpDir } from './helpers/cli.js';
import { buildHistory } from './helpers/history.js';
import { Repository } from '../lib/store/repository.js';
import { TreeReader } from '../lib/tree/tree-reader.js';
import { readPackTrailer, listPackFiles } from '../lib/store/pack-files.js';
import { RepoLayout } from '../lib/store/layout.js';
import { chunkId, decodeChunkList } from '../lib/format/tree.js';
import type { PackedBlob } from '../lib/format/pack.js';

interface PackBlobs {
  file: string;
  size: number;
  blobs: PackedBlob[];
}

async function packs(repo: string): Promise<PackBlobs[]> {
  const layout = new RepoLayout(repo);
  const out: PackBlobs[] = [];
  for (const hex of await listPackFiles(layout)) {
    const file = layout.packFile(hex);
    out.push({ file, ...(await readPackTrailer(file)) });
  }
  return out;
}

/** "source@name: path" of every file (by chunk) or directory (by tree blob) that uses a blob. */
async function usersOf(repoDir: string, blobHex: string): Promise<string[]> {
  const repo = await Repository.open(repoDir, { readOnly: true });
  const trees = new TreeReader(repo.blobs);
  const found = new Set<string>();
  const walk = async (snap: string, id: Buffer, dir: string): Promise<void> => {
    if (id.toString('hex') === blobHex) found.add(`${snap}: ${dir || '/'}`);
    const node = await trees.node(id);
    if (node.kind === 'index') for (const p of node.pages) if (p.id.toString('hex') === blobHex) found.add(`${snap}: ${dir || '/'}`);
    for await (const e of trees.entries(id)) {
      const p = `${dir}${e.name.toString('utf8')}`;
      if (e.subtree) await walk(snap, e.subtree, `${p}/`);
      if (e.content) {
        const list = decodeChunkList(e.content, e.size);
        for (let i = 0; i < list.count; i++) if (chunkId(list, i).toString('hex') === blobHex) found.add(`${snap}: ${p}`);
      }
    }
  };
  for (const r of (await repo.snapshots.load()).records) await walk(`${r.source}@${r.name}`, Buffer.from(r.root, 'hex'), '');
  await repo.close();
  return [...found].sort();
}

async function flipByte(file: string, offset: number): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, offset);
  b[0] ^= 0x40;
  await fh.write(b, 0, 1, offset);
  await fh.close();
}

function reported(stdout: string, user: string): boolean {
  return stdout.split('\n').some((line) => line.startsWith(`${user}: `));
}

t.test('check', async (t) => {
  const base = await tmpDir(t, 'snapfs-check');
  const h = await buildHistory(base, { backups: 2, files: 120, bigFiles: 6, seed: 5 });
  const all = await packs(h.repo);
  const dataPacks = all.filter((p) => p.blobs.every((b) => b.type === 1));
  const treePacks = all.filter((p) => p.blobs.every((b) => b.type === 2));
  t.ok(dataPacks.length >= 3 && treePacks.length >= 1, `${dataPacks.length} data packs, ${treePacks.length} tree packs`);
  let n = 0;
  const copy = async (): Promise<string> => {
    const dir = join(base, `copy-${n++}`);
    await runProcess('cp', ['-a', h.repo, dir]);
    return dir;
  };
  const inCopy = (repo: string, file: string): string => file.replace(h.repo, repo);

  t.test('a healthy repository reports nothing', async (t) => {
    for (const args of [[], ['--read-data']]) {
      const r = await runSnapfs(['check', h.repo, ...args, '--json']);
      t.equal(r.code, 0);
      t.same(r.json.problems, []);
      t.equal(r.json.ok, true);
      t.equal(r.json.snapshots, 2);
    }
    const human = await runSnapfs(['check', h.repo, '--read-data']);
    t.match(human.stdout, /^no problems found \(2 snapshots, /);
  });

  t.test('a flipped byte inside a data chunk', async (t) => {
    const repo = await copy();
    const pack = dataPacks[0]!;
    const blob = [...pack.blobs].sort((a, b) => b.storedLength - a.storedLength)[0]!;
    const users = await usersOf(h.repo, blob.id.toString('hex'));
    t.ok(users.length > 0, `chunk is used by ${users.join(', ')}`);
    await flipByte(inCopy(repo, pack.file), blob.offset + 32 + (blob.storedLength >> 1));
    const r = await runSnapfs(['check', repo, '--read-data'], { allowFail: true });
    t.equal(r.code, 15, 'exit code of CORRUPT_DATA');
    for (const u of users) t.ok(reported(r.stdout, u), `reports ${u}`);
    t.match(r.stdout, new RegExp(`chunk ${blob.id.toString('hex')}: corrupt`));
    t.match(r.stdout, /problem\(s\) found; damaged snapshots: data@/);
  });

  t.test('a truncated pack', async (t) => {
    const repo = await copy();
    const pack = dataPacks[1]!;
    const lost = pack.blobs.filter((b) => b.offset + 32 + b.storedLength > pack.size / 2);
    const users = (await Promise.all(lost.map((b) => usersOf(h.repo, b.id.toString('hex'))))).flat();
    t.ok(users.length > 0);
    await fsp.truncate(inCopy(repo, pack.file), Math.floor(pack.size / 2));
    const r = await runSnapfs(['check', repo, '--json'], { allowFail: true });
    t.equal(r.code, 15);
    const lines = r.json.problems.map((p: any) => (p.snapshot ? `${p.snapshot}: ${p.path}` : p.message));
    t.ok(lines.some((l: string) => /missing pack trailer/.test(l)), 'the pack is named');
    for (const u of users) t.ok(lines.includes(u), `reports ${u}`);
    t.ok(r.json.problems.some((p: any) => /cut off: pack [0-9a-f]{32} is truncated/.test(p.message)));
  });

  t.test('a deleted pack', async (t) => {
    const repo = await copy();
    const pack = dataPacks[2]!;
    const users = (await Promise.all(pack.blobs.map((b) => usersOf(h.repo, b.id.toString('hex'))))).flat();
    await fsp.rm(inCopy(repo, pack.file));
    const r = await runSnapfs(['check', repo], { allowFail: true });
    t.equal(r.code, 15);
    t.match(r.stdout, /pack [0-9a-f]{32} is missing \(\d+ indexed blobs\)/);
    for (const u of users) t.ok(reported(r.stdout, u), `reports ${u}`);
  });

  t.test('a corrupted tree blob', async (t) => {
    const repo = await copy();
    // A directory below the root, so the report must name a path.
    const candidates = [];
    for (const p of treePacks) for (const b of p.blobs) candidates.push({ p, b, users: await usersOf(h.repo, b.id.toString('hex')) });
    const target = candidates.find((c) => c.users.length > 0 && c.users.every((u) => !u.endsWith(': /')));
    t.ok(target, 'found a subdirectory tree');
    await flipByte(inCopy(repo, target!.p.file), target!.b.offset + 32 + (target!.b.storedLength >> 1));
    const r = await runSnapfs(['check', repo], { allowFail: true });
    t.equal(r.code, 15, 'found without --read-data: trees are always verified');
    for (const u of target!.users) t.ok(reported(r.stdout, u), `reports ${u}`);
    t.match(r.stdout, new RegExp(`tree ${target!.b.id.toString('hex')}: .*(corrupt|does not match|failed)`));
  });
});

t.test('an index key of the wrong length (a damaged page) is reported as damage, not an internal error', async (t) => {
  const base = await tmpDir(t, 'check-badkey');
  const h = await buildHistory(base, { backups: 1, files: 20, bigFiles: 1, seed: 9 });
  // Written with lmdb-js itself, as a damaged page can present it: a 144-byte key whose
  // 34-byte value places it in a pack that does not exist (so check looks at it closely).
  const { open } = (await import('../lib/platform/lmdb.js')).lmdb;
  const env = open({ path: join(h.repo, 'index'), maxDbs: 4, compression: false } as Parameters<typeof open>[0]);
  const blobs = env.openDB<Buffer, Buffer>({ name: 'blobs', keyEncoding: 'binary', encoding: 'binary', compression: false });
  const value = Buffer.alloc(34, 0);
  value.fill(0xab, 0, 16);
  await blobs.put(Buffer.alloc(144, 7), value);
  await env.close();
  const r = await runSnapfs(['check', h.repo, '--json'], { allowFail: true });
  t.equal(r.code, 15, 'check exits 15 (damage)');
  t.notMatch(r.stderr + r.stdout, /internal error|INTERNAL/, 'no internal error');
  t.match(r.stderr + r.stdout, /malformed blob id \(144 bytes\).*repair index/, 'says the index is damaged and what to do');
  const repair = await runSnapfs(['repair', 'index', h.repo], { allowFail: true });
  t.equal(repair.code, 0, 'repair index rebuilds it');
  t.equal((await runSnapfs(['check', h.repo], { allowFail: true })).code, 0, 'check passes afterwards');
});
