// Repository files are private: after init, backup, forget, prune (with repacking), repair
// index, check, and a mount, every directory in the repository is 0700 and every file 0600
// (at most), whatever the umask of the process that made them (000 here, the worst case).
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { cliPath, runProcess, tmpDir } from './helpers/cli.js';
import { assertClean } from './helpers/fault.js';
import { XorShift32, generateSmallTree, mutateFiles } from './helpers/tree-gen.js';
import { fuseAvailable, mountForeground } from './helpers/mount.js';

/** The CLI under `umask 000`. */
function snapfsUmask0(args: string[]) {
  return runProcess('/bin/sh', ['-c', 'umask 000; exec "$0" "$@"', process.execPath, cliPath(), ...args], { allowFail: true, timeoutMs: 120_000 });
}

async function tooOpen(repo: string): Promise<string[]> {
  const bad: string[] = [];
  const root = await fsp.stat(repo);
  if ((root.mode & 0o077) !== 0) bad.push(`/ ${(root.mode & 0o7777).toString(8)}`);
  for (const e of await fsp.readdir(repo, { recursive: true, withFileTypes: true })) {
    const p = join(e.parentPath, e.name);
    const st = await fsp.lstat(p);
    if ((st.mode & 0o077) !== 0) bad.push(`${p.slice(repo.length)} ${(st.mode & 0o7777).toString(8)}`);
  }
  return bad;
}

t.test('repository files are 0700/0600 under umask 000', async (t) => {
  const base = await tmpDir(t, 'sec-files');
  const src = join(base, 'src');
  const files = await generateSmallTree(src, { files: 150, dirs: 5, seed: 81 });
  await fsp.writeFile(join(src, 'big.bin'), new XorShift32(82).bytes(4 * 1024 * 1024));
  const repo = join(base, 'repo');
  // An existing, empty, world-readable directory: init must close it.
  await fsp.mkdir(repo, { mode: 0o755 });
  await fsp.chmod(repo, 0o755);
  const step = async (label: string, args: string[], allowed = [0]): Promise<void> => {
    assertClean(t, await snapfsUmask0(args), label, allowed);
    t.same(await tooOpen(repo), [], `after ${label}: nothing readable by others`);
  };
  await step('init', ['init', repo, '--chunk-avg', '65536', '--pack-size', '1048576']);
  for (let i = 0; i < 3; i++) {
    await mutateFiles(src, files.filter((_, k) => (k + i) % 3 === 0), 90 + i);
    await step(`backup ${i}`, ['backup', repo, src, '--source', 's', '--time', `2026-01-0${i + 1}T10:00:00Z`]);
  }
  await step('forget', ['forget', repo, '--keep-last', '1']);
  await step('prune', ['prune', repo, '--repack-threshold', '0.9']);
  await fsp.rm(join(repo, 'index'), { recursive: true });
  await step('repair index', ['repair', 'index', repo]);
  await step('check --read-data', ['check', repo, '--read-data']);
  await step('restore', ['restore', repo, 's@last', join(base, 'out')]);
  if (await fuseAvailable()) {
    await fsp.mkdir(join(base, 'mnt'));
    const m = await mountForeground(t, repo, join(base, 'mnt'));
    t.same(await tooOpen(repo), [], 'while mounted: nothing readable by others');
    await m.stop();
    t.same(await tooOpen(repo), [], 'after the mount: nothing readable by others');
    // Daemon mode keeps a pid file under run/.
    const mnt2 = join(base, 'mnt2');
    await fsp.mkdir(mnt2);
    t.teardown(() => runProcess('umount', ['-l', mnt2], { allowFail: true }));
    await step('mount (daemon)', ['mount', repo, mnt2]);
    await step('umount', ['umount', mnt2]);
  }
});
