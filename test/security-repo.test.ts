// Repository confidentiality: files are private to the owner, and the hash secret that keys
// chunk ids never leaves config.json: not in any command's output, not in the mount.
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { generateSmallTree } from './helpers/tree-gen.js';
import { cliPath, runProcess, runSnapfs, tmpDir } from './helpers/cli.js';
import { fuseAvailable, mountForeground } from './helpers/mount.js';

async function modes(root: string): Promise<Array<{ path: string; mode: number }>> {
  const out = [{ path: '.', mode: (await fs.stat(root)).mode & 0o777 }];
  for (const e of await fs.readdir(root, { recursive: true, withFileTypes: true })) {
    const p = path.join(e.parentPath, e.name);
    const st = await fs.lstat(p);
    out.push({ path: path.relative(root, p), mode: st.mode & 0o777 });
  }
  return out;
}

t.test('every repository file is 0600 and every directory 0700, whatever the umask', async (t) => {
  const work = await tmpDir(t, 'security-modes');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await generateSmallTree(src, { files: 50, dirs: 4, seed: 3 });
  // A permissive umask must not leak into the repository.
  const withUmask000 = (...args: string[]) => runProcess('sh', ['-c', 'umask 000 && exec "$@"', 'sh', process.execPath, cliPath(), ...args]);
  await withUmask000('init', repo, '--chunk-avg', '65536');
  await withUmask000('backup', repo, src, '--source', 's');
  await runSnapfs(['forget', repo, '--keep-last', '1']);
  await runSnapfs(['prune', repo]);
  const wrong = (await modes(repo)).filter((m) => (m.mode & 0o077) !== 0);
  t.same(wrong, [], 'nothing in the repository is readable by group or others');
});

t.test('the hash secret never appears in output or in the mount', async (t) => {
  const work = await tmpDir(t, 'security-secret');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await generateSmallTree(src, { files: 20, dirs: 2, seed: 4 });
  await runSnapfs(['init', repo, '--chunk-avg', '65536']);
  const secret = JSON.parse(await fs.readFile(path.join(repo, 'config.json'), 'utf8')).hashSecret as string;
  const gearSeed = JSON.parse(await fs.readFile(path.join(repo, 'config.json'), 'utf8')).chunker.gearSeed as string;
  const outputs: string[] = [];
  for (const args of [
    ['backup', repo, src, '--source', 's', '--json'],
    ['snapshots', repo, '--json'],
    ['ls', repo, 's@last', '-R', '--json'],
    ['stats', repo, '--json'],
    ['check', repo, '--read-data', '--json'],
    ['stats', repo],
  ]) {
    const r = await runSnapfs(args, { allowFail: true });
    outputs.push(r.stdout, r.stderr);
  }
  const all = outputs.join('\n');
  t.notOk(all.includes(secret.slice(0, 32)), 'no command prints the secret (or a part of it)');
  t.notOk(all.includes(gearSeed), 'nor the chunker seed');

  if (!(await fuseAvailable())) return;
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(mnt);
  await mountForeground(t, repo, mnt);
  const listing = await runProcess('sh', ['-c', 'find "$1" -type f -exec cat {} +; find "$1"', 'sh', mnt]);
  t.notOk(listing.stdout.includes(secret.slice(0, 32)), 'no file in the mount contains the secret');
  t.notOk(/config\.json|index|packs/.test((await fs.readdir(mnt)).join(' ')), 'no repository internals in the mount');
});
