// Keyed ids and the secret. Two repositories give different ids (and different chunk
// boundaries) for the same content, and no id is the plain XXH3-128 of its content: a file
// crafted to collide under the unkeyed hash collides under neither key. The secret (and
// the gear seed) never appear in what any command prints, human or --json, on success or
// error, in the nightly job's output, in the mount (names, contents, link targets, xattrs)
// or in the mount server's output; the mount shows no repository internals.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import xxhash from '@node-rs/xxhash';
import { RunResult, runProcess, tmpDir } from './helpers/cli.js';
import { initRepo } from './helpers/history.js';
import { assertClean, snapfs } from './helpers/fault.js';
import { XorShift32, generateSmallTree } from './helpers/tree-gen.js';
import { fuseAvailable, mountForeground } from './helpers/mount.js';
import { listPackFiles, readPackTrailer } from '../lib/store/pack-files.js';
import { RepoLayout } from '../lib/store/layout.js';
import { BlobHasher } from '../lib/format/blob-id.js';
import { Repository } from '../lib/store/repository.js';
import { SnapshotCatalog } from '../lib/snapshot/catalog.js';
import { TreeReader } from '../lib/tree/tree-reader.js';
import { decodeChunkList } from '../lib/format/tree.js';
import { idFromHex } from '../lib/format/blob-id.js';
import { listXattrs } from '../lib/platform/native.js';

async function blobIds(repo: string): Promise<Set<string>> {
  const layout = new RepoLayout(repo);
  const out = new Set<string>();
  for (const hex of await listPackFiles(layout)) for (const b of (await readPackTrailer(layout.packFile(hex))).blobs) out.add(b.id.toString('hex'));
  return out;
}

function unkeyed(data: Buffer): string {
  const v = xxhash.xxh3.xxh128(data);
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(v >> 64n, 0);
  b.writeBigUInt64BE(v & 0xffffffffffffffffn, 8);
  return b.toString('hex');
}

async function chunkLengths(repoDir: string, source: string, file: string): Promise<number[]> {
  const repo = await Repository.open(repoDir, { readOnly: true });
  try {
    const snap = await new SnapshotCatalog(repo.snapshots).resolve(source, 'last');
    const { entry } = await new TreeReader(repo.blobs).resolve(idFromHex(snap.root), [Buffer.from(file)], file);
    return [...decodeChunkList(entry!.content!, entry!.size).lengths];
  } finally {
    await repo.close();
  }
}

/** Pieces of `secret` long enough that finding one means the secret leaked. */
function leaks(text: string, secret: string): string[] {
  const found: string[] = [];
  for (let i = 0; i + 24 <= secret.length; i += 8) if (text.includes(secret.slice(i, i + 24))) found.push(secret.slice(i, i + 24));
  return found;
}

t.test('ids are keyed per repository', async (t) => {
  const base = await tmpDir(t, 'sec-keys');
  const src = join(base, 'src');
  const files = await generateSmallTree(src, { files: 60, dirs: 3, seed: 71 });
  await fsp.writeFile(join(src, 'big.bin'), new XorShift32(72).bytes(3 * 1024 * 1024));
  const a = join(base, 'a');
  const b = join(base, 'b');
  for (const r of [a, b]) {
    await initRepo(r);
    assertClean(t, await snapfs(['backup', r, src, '--source', 'same']), 'backup', [0]);
  }
  const idsA = await blobIds(a);
  const idsB = await blobIds(b);
  t.ok(idsA.size > 60 && idsB.size > 60, `${idsA.size} and ${idsB.size} blobs`);
  t.same([...idsA].filter((id) => idsB.has(id)), [], 'the same content has different ids in two repositories');
  const plain = new Set<string>();
  for (const f of files) plain.add(unkeyed(await fsp.readFile(join(src, f))));
  t.same([...plain].filter((h) => idsA.has(h) || idsB.has(h)), [], 'no id is the unkeyed XXH3-128 of a file (small files are one chunk each)');
  const la = await chunkLengths(a, 'same', 'big.bin');
  const lb = await chunkLengths(b, 'same', 'big.bin');
  t.ok(la.length > 10 && lb.length > 10, 'the big file is many chunks in both');
  t.not(la.join(','), lb.join(','), 'chunk boundaries differ too (the gear table is keyed)');

  // The keying itself: one input, three hashes.
  const data = Buffer.from('From: attacker\r\n\r\ncrafted to collide under the unkeyed hash\r\n');
  const secret = (repo: string) => fsp.readFile(join(repo, 'config.json'), 'utf8').then((s) => Buffer.from(JSON.parse(s).hashSecret, 'hex'));
  const ha = new BlobHasher(await secret(a)).id(data).toString('hex');
  const hb = new BlobHasher(await secret(b)).id(data).toString('hex');
  t.not(ha, hb);
  t.not(ha, unkeyed(data));
  t.not(hb, unkeyed(data));
});

t.test('the secret is never shown', async (t) => {
  const base = await tmpDir(t, 'sec-secret');
  const src = join(base, 'src');
  await generateSmallTree(src, { files: 40, dirs: 3, seed: 73 });
  const repo = join(base, 'repo');
  const outputs: Array<[string, RunResult]> = [];
  const run = async (label: string, args: string[], allowed = [0]): Promise<RunResult> => {
    const r = await snapfs(args);
    assertClean(t, r, label, allowed);
    outputs.push([label, r]);
    return r;
  };
  await run('init', ['init', repo, '--chunk-avg', '65536', '--pack-size', '1048576', '--json']);
  await run('init (human)', ['init', join(base, 'repo2')]);
  const config = JSON.parse(await fsp.readFile(join(repo, 'config.json'), 'utf8'));
  const secrets = [config.hashSecret as string, config.chunker.gearSeed as string];
  const config2 = JSON.parse(await fsp.readFile(join(base, 'repo2', 'config.json'), 'utf8'));
  secrets.push(config2.hashSecret, config2.chunker.gearSeed);

  for (const json of [[], ['--json']]) {
    await run('backup', ['backup', repo, src, '--source', 's', ...json]);
    await run('snapshots', ['snapshots', repo, ...json]);
    await run('ls -R', ['ls', repo, 's@last', '-R', ...json]);
    await run('stats', ['stats', repo, ...json]);
    await run('check --read-data', ['check', repo, '--read-data', ...json]);
    await run('forget --dry-run', ['forget', repo, '--keep-last', '1', '--dry-run', ...json]);
    await run('prune', ['prune', repo, ...json]);
    await run('repair index', ['repair', 'index', repo, ...json]);
    await run('restore', ['restore', repo, 's@last', join(base, `out${json.length}`), ...json]);
    await run('restore --all-sources', ['restore', repo, '--all-sources', '@last', join(base, `all${json.length}`), ...json]);
  }
  await run('cat', ['cat', repo, 's@last:d000/f0000.dat']);
  // The nightly job, its summary and the environment of its post-backup command.
  const job = join(base, 'job.json');
  await fsp.writeFile(job, JSON.stringify({ repository: repo, sources: [{ name: 'job', path: src }], retention: { keepLast: 2 }, prune: true, postBackupCommand: 'env; cat "$SNAPFS_REPOSITORY/lock"' }));
  await run('run --config', ['run', '--config', job, '--json']);
  // Mistakes and errors: the repository's config given as a job config, a damaged secret.
  await run('run --config REPO/config.json', ['run', '--config', join(repo, 'config.json')], [1, 2]);
  await run('backup --help', ['backup', '--help']);
  const broken = join(base, 'broken');
  await runProcess('cp', ['-a', repo, broken]);
  const bc = JSON.parse(await fsp.readFile(join(broken, 'config.json'), 'utf8'));
  await fsp.writeFile(join(broken, 'config.json'), JSON.stringify({ ...bc, hashSecret: bc.hashSecret.slice(0, -1) + 'z' }));
  await run('a config whose secret is damaged', ['snapshots', broken, '--json'], [15]);
  await fsp.writeFile(join(broken, 'config.json'), JSON.stringify({ ...bc, chunker: { ...bc.chunker, gearSeed: bc.chunker.gearSeed + 'zz' } }));
  await run('a config whose gear seed is damaged', ['backup', broken, src, '--source', 's'], [15]);

  for (const [label, r] of outputs) {
    for (const s of secrets) {
      t.same(leaks(r.stdout + r.stderr, s), [], `${label}: no piece of a secret in its output`);
      if (s.length === 16) t.notOk((r.stdout + r.stderr).includes(s), `${label}: no gear seed`);
    }
  }
  // Files a reader may get to see besides the config: lock note, snapshot records.
  const others = [join(repo, 'lock'), ...(await fsp.readdir(join(repo, 'snapshots'))).map((f) => join(repo, 'snapshots', f))];
  for (const f of others) t.same(leaks(await fsp.readFile(f, 'utf8'), secrets[0]!), [], `${f.slice(repo.length)}: no piece of the secret`);
});

t.test('the mount shows neither the secret nor repository internals', { skip: !(await fuseAvailable()) && 'needs /dev/fuse' }, async (t) => {
  const base = await tmpDir(t, 'sec-mount');
  const src = join(base, 'src');
  await generateSmallTree(src, { files: 30, dirs: 3, seed: 74 });
  await fsp.symlink('../d000', join(src, 'link'));
  const repo = join(base, 'repo');
  await initRepo(repo);
  assertClean(t, await snapfs(['backup', repo, src, '--source', 'mail/imap']), 'backup', [0]);
  const secret = JSON.parse(await fsp.readFile(join(repo, 'config.json'), 'utf8')).hashSecret as string;
  const mnt = join(base, 'mnt');
  await fsp.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt);
  const top = await fsp.readdir(mnt);
  t.same(top, ['mail'], 'only the sources at the top: no config.json, packs, index, snapshots, lock');
  let seen = '';
  let files = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      seen += `${e.name}\n`;
      for (const [k, v] of listXattrs(p)) seen += `${k.toString('latin1')}=${v.toString('latin1')}\n`;
      if (e.isSymbolicLink()) seen += `${await fsp.readlink(p)}\n`;
      else if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        seen += (await fsp.readFile(p)).toString('latin1');
        files++;
      }
    }
  };
  await walk(mnt);
  t.ok(files >= 30, `read ${files} files through the mount`);
  t.same(leaks(seen, secret), [], 'no piece of the secret in names, contents, link targets or xattrs');
  const server = m.child.output();
  t.same(leaks(server.stdout + server.stderr, secret), [], 'nor in the mount server\'s output');
  const environ = await fsp.readFile(`/proc/${m.child.pid}/environ`, 'latin1').catch(() => '');
  const cmdline = await fsp.readFile(`/proc/${m.child.pid}/cmdline`, 'latin1').catch(() => '');
  t.same(leaks(environ + cmdline, secret), [], 'nor in its command line or environment');
  await m.stop();
});
