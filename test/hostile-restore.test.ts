// Restore never writes outside TARGET. Crafted repositories (trees built with the format
// encoders and stored with the real writer, so every blob verifies) hold entries named
// '..', '.', 'a/../../x', with a NUL, the same name twice across two tree pages (a symlink
// to outside, then a directory), and a snapshot record whose source is '../../x' (restore
// --all-sources). A TARGET that is a symlink is refused. And a hostile user who owns an
// (empty) TARGET and keeps replacing what restore creates with symlinks to outside, while
// root restores into it, gets nothing created, changed or chmod'ed outside TARGET.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { childEnv, runProcess, tmpDir } from './helpers/cli.js';
import { initRepo } from './helpers/history.js';
import { assertClean, snapfs } from './helpers/fault.js';
import { generateSmallTree, isRoot } from './helpers/tree-gen.js';
import { Repository } from '../lib/store/repository.js';
import { BlobType } from '../lib/format/pack.js';
import { BlobId, idToHex } from '../lib/format/blob-id.js';
import { EntryKind, PageRef, TreeEntry, encodeChunkList, encodeIndex, encodeLeaf } from '../lib/format/tree.js';
import { SNAPSHOT_FORMAT_VERSION, SnapshotRecord } from '../lib/format/snapshot.js';

const CONTENT = Buffer.from('this must not escape\n');

function meta(name: Buffer | string, kind: EntryKind, extra: Partial<TreeEntry> = {}): TreeEntry {
  return {
    name: typeof name === 'string' ? Buffer.from(name) : name, kind, mode: kind === EntryKind.Directory ? 0o755 : 0o644, uid: 0, gid: 0,
    size: 0, allocated: 0, mtimeNs: 1_700_000_000_000_000_000n, ctimeNs: 0n, inode: BigInt(1 + Math.floor(Math.random() * 1e9)), device: 1,
    nlink: 1, rdev: 0, since: 1, ...extra,
  };
}

/** Writes blobs with the real writer and a snapshot record pointing at `build`'s root tree. */
async function craft(repoDir: string, source: string, build: (put: (type: BlobType, raw: Buffer) => Promise<BlobId>) => Promise<BlobId>): Promise<void> {
  const repo = await Repository.open(repoDir);
  try {
    const session = await repo.beginWrite('crafting a hostile snapshot');
    let root: BlobId;
    try {
      root = await build(async (type, raw) => (await session.writer.put(type, raw)).id);
      await session.writer.flush();
    } finally {
      await session.close();
    }
    const id = randomBytes(16).toString('hex');
    const rec: SnapshotRecord = {
      version: SNAPSHOT_FORMAT_VERSION, id, source, time: '2026-03-01T10:00:00.000Z', name: '2026-03-01', root: idToHex(root), parent: null,
      generation: 1, generations: { '1': '1772359200000000000' }, rootMeta: { mode: 0o755, uid: 0, gid: 0, mtimeNs: '0' }, hostname: 'x',
      paths: ['/x'], excludes: [], partial: false,
      stats: { files: 1, directories: 1, otherEntries: 0, filesNew: 1, filesChanged: 0, filesUnchanged: 0, filesOpened: 1, filesFailed: 0, bytesTotal: 1, bytesRead: 1, blobsAdded: 1, dataBlobsAdded: 1, bytesAddedRaw: 1, bytesAddedStored: 1, durationMs: 1 },
    };
    await repo.snapshots.save(rec);
  } finally {
    await repo.close();
  }
}

/** Everything under `dir` (names and modes), to compare before and after. */
async function listing(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { recursive: true, withFileTypes: true })) {
    const p = join(e.parentPath, e.name);
    const st = await fsp.lstat(p);
    out.push(`${p.slice(dir.length)} ${st.mode.toString(8)} ${st.uid}`);
  }
  return out.sort();
}

t.test('crafted repositories cannot make restore write outside TARGET', async (t) => {
  const base = await tmpDir(t, 'hostile-restore');
  const repo = join(base, 'repo');
  const outside = join(base, 'outside');
  await fsp.mkdir(outside);
  await fsp.writeFile(join(outside, 'sentinel'), 'unchanged');
  await initRepo(repo);

  const file = async (put: (type: BlobType, raw: Buffer) => Promise<BlobId>, name: Buffer | string): Promise<TreeEntry> => {
    const id = await put(BlobType.Data, CONTENT);
    return meta(name, EntryKind.File, { size: CONTENT.length, content: encodeChunkList([{ offset: 0, length: CONTENT.length, id }]) });
  };
  const escapingDir = async (put: (type: BlobType, raw: Buffer) => Promise<BlobId>, name: Buffer | string): Promise<TreeEntry> => {
    const sub = await put(BlobType.Tree, encodeLeaf([await file(put, 'escaped')]));
    return meta(name, EntryKind.Directory, { subtree: sub, nlink: 2 });
  };
  const cases: Array<[string, (put: (type: BlobType, raw: Buffer) => Promise<BlobId>) => Promise<BlobId>]> = [
    ['a directory named ..', async (put) => put(BlobType.Tree, encodeLeaf([await escapingDir(put, '..')]))],
    ['a file named ../../escaped', async (put) => put(BlobType.Tree, encodeLeaf([await file(put, '../../escaped')]))],
    ['a directory named .', async (put) => put(BlobType.Tree, encodeLeaf([await escapingDir(put, '.')]))],
    ['a file named with a NUL', async (put) => put(BlobType.Tree, encodeLeaf([await file(put, Buffer.from('ok\0/../../escaped'))]))],
    ['.. deeper down', async (put) => {
      const inner = await put(BlobType.Tree, encodeLeaf([await escapingDir(put, '..')]));
      return put(BlobType.Tree, encodeLeaf([meta('sub', EntryKind.Directory, { subtree: inner })]));
    }],
    ['the same name twice across two tree pages: a symlink to outside, then a directory', async (put) => {
      const link = meta('x', EntryKind.Symlink, { mode: 0o777, target: Buffer.from(outside), size: outside.length });
      const page1 = await put(BlobType.Tree, encodeLeaf([meta('a', EntryKind.Fifo), link]));
      const page2 = await put(BlobType.Tree, encodeLeaf([await escapingDir(put, 'x')]));
      const pages: PageRef[] = [{ firstName: Buffer.from('a'), count: 2, id: page1 }, { firstName: Buffer.from('x'), count: 1, id: page2 }];
      return put(BlobType.Tree, encodeIndex(pages));
    }],
    ['the same name twice across pages: a symlink to outside, then a file', async (put) => {
      const link = meta('y', EntryKind.Symlink, { mode: 0o777, target: Buffer.from(join(outside, 'sentinel')), size: 10 });
      const page1 = await put(BlobType.Tree, encodeLeaf([meta('b', EntryKind.Fifo), link]));
      const page2 = await put(BlobType.Tree, encodeLeaf([await file(put, 'y')]));
      return put(BlobType.Tree, encodeIndex([{ firstName: Buffer.from('b'), count: 2, id: page1 }, { firstName: Buffer.from('y'), count: 1, id: page2 }]));
    }],
  ];
  let n = 0;
  for (const [label, build] of cases) {
    const source = `crafted${n++}`;
    await craft(repo, source, build);
    const before = await listing(base);
    const target = join(base, 'targets', source, 'target');
    const r = await snapfs(['restore', repo, `${source}@last`, target]);
    assertClean(t, r, `${label}: restore`, [15, 17]);
    t.notOk(await fsp.access(join(base, 'escaped')).then(() => true, () => false), `${label}: nothing escaped`);
    const mine = (l: string): boolean => !l.startsWith('/targets') && !l.startsWith('/repo/');
    t.same((await listing(base)).filter(mine), before.filter(mine), `${label}: nothing outside TARGET changed`);
    t.equal(await fsp.readFile(join(outside, 'sentinel'), 'utf8'), 'unchanged', `${label}: the file outside is untouched`);
    const chk = await snapfs(['check', repo, '--json']);
    t.ok(chk.json?.problems?.some((p: any) => p.snapshot === `${source}@2026-03-01`), `${label}: check reports the crafted snapshot`);
    // ls and cat must not trip over it either.
    assertClean(t, await snapfs(['ls', repo, `${source}@last`, '-R']), `${label}: ls -R`, [0, 15]);
  }
  const spec = await snapfs(['restore', repo, 'crafted0@last:..', join(base, 't-spec')]);
  assertClean(t, spec, 'a restore path with ..', [2]);

  // A snapshot record whose source climbs out of TARGET (restore --all-sources joins it on).
  await craft(repo, 'victim', async (put) => put(BlobType.Tree, encodeLeaf([await file(put, 'escaped')])));
  const records = await fsp.readdir(join(repo, 'snapshots'));
  for (const f of records) {
    const p = join(repo, 'snapshots', f);
    const text = await fsp.readFile(p, 'utf8');
    if (text.includes('"victim"')) await fsp.writeFile(p, text.replace('"victim"', '"../../../escaped-source"'));
  }
  const all = await snapfs(['restore', repo, '--all-sources', '@last', join(base, 'all', 'target'), '--json']);
  assertClean(t, all, 'restore --all-sources with a climbing source name', [3]);
  t.notOk(await fsp.access(join(base, 'escaped-source')).then(() => true, () => false), 'nothing restored outside TARGET');

  // TARGET itself a symlink.
  const real = join(base, 'real-target');
  await fsp.mkdir(real);
  await fsp.symlink(real, join(base, 'link-target'));
  await craft(repo, 'plain', async (put) => put(BlobType.Tree, encodeLeaf([await file(put, 'hello')])));
  const viaLink = await snapfs(['restore', repo, 'plain@last', join(base, 'link-target')]);
  assertClean(t, viaLink, 'a TARGET that is a symlink', [17]);
  t.same(await fsp.readdir(real), [], 'nothing was written through it');
});

t.test('a hostile owner of TARGET racing a root restore with symlinks', { skip: !isRoot && 'needs root: the restore runs as root, the attacker as nobody' }, async (t) => {
  const base = await tmpDir(t, 'hostile-race');
  await fsp.chmod(base, 0o755);
  const repo = join(base, 'repo');
  const src = join(base, 'src');
  await generateSmallTree(src, { files: 300, dirs: 40, seed: 61 });
  for (let i = 0; i < 30; i++) {
    await fsp.writeFile(join(src, `top-${i}`), `top ${i}\n`);
    await fsp.chmod(join(src, `top-${i}`), 0o4755);
    await runProcess('mkfifo', [join(src, `fifo-${i}`)]);
  }
  await initRepo(repo);
  assertClean(t, await snapfs(['backup', repo, src, '--source', 'victim']), 'backup', [0]);

  // The attacker's own directory and file outside TARGET, and an empty TARGET it owns.
  const outside = join(base, 'outside');
  await fsp.mkdir(outside);
  await fsp.writeFile(join(outside, 'sentinel'), 'mine');
  await fsp.chmod(join(outside, 'sentinel'), 0o600);
  await runProcess('chown', ['-R', 'nobody', outside]);
  await fsp.chmod(outside, 0o777);
  const before = await listing(outside);

  let rounds = 0;
  let escapes = 0;
  for (let round = 0; round < 6; round++) {
    const target = join(base, `target-${round}`);
    await fsp.mkdir(target, { mode: 0o777 });
    await fsp.chmod(target, 0o777);
    await runProcess('chown', ['nobody', target]);
    // As nobody: keep moving whatever appears in TARGET aside and putting a symlink to outside
    // (or to the sentinel) in its place.
    const attacker = spawn('runuser', ['-u', 'nobody', '--', 'env', '-u', 'NODE_OPTIONS', process.execPath, '-e', `
      const fs = require('fs'); const path = require('path');
      const target = ${JSON.stringify(target)}, outside = ${JSON.stringify(outside)};
      let k = 0;
      const tick = () => {
        let names = [];
        try { names = fs.readdirSync(target); } catch {}
        for (const n of names) {
          if (n.startsWith('.moved-')) continue;
          try {
            fs.renameSync(path.join(target, n), path.join(target, '.moved-' + (k++)));
            fs.symlinkSync(k % 2 ? outside : path.join(outside, 'sentinel'), path.join(target, n));
          } catch {}
        }
        setImmediate(tick);
      };
      tick();
    `], { stdio: 'ignore', env: childEnv(), detached: true });
    // runuser forks: the whole process group goes.
    const stop = async (): Promise<void> => {
      try {
        process.kill(-attacker.pid!, 'SIGKILL');
      } catch {
        // gone already
      }
    };
    t.teardown(stop);
    await new Promise((r) => setTimeout(r, 300));
    const r = await snapfs(['restore', repo, 'victim@last', target]);
    await stop();
    t.comment(`round ${round}: restore exit ${r.code}: ${r.stderr.trim().split('\n')[0] ?? ''}`);
    rounds++;
    assertClean(t, r, `round ${round}: restore under attack ends cleanly`, [0, 15, 17, 18]);
    const now = await listing(outside);
    if (JSON.stringify(now) !== JSON.stringify(before)) escapes++;
    t.same(now, before, `round ${round}: nothing created, changed or chmod'ed outside TARGET`);
  }
  t.comment(`${rounds} restores raced, ${escapes} escaped`);
});
