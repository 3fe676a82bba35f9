// The answers the low-level binding gives on its own thread, without JS (attributes of
// snapshot content, `last`'s target, xattrs that cannot exist): the same as JS gives,
// before and after the cache is warm, across remounts, and live nodes still move.
import t from 'tap';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateFidelityTree } from './helpers/tree-gen.js';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground, serverMemory, waitFor } from './helpers/mount.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const chunk = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };

/**
 * Every entry's stat below `dir`, relative names, in find's order. cached 'never' makes
 * the kernel ask the server (statx AT_STATX_FORCE_SYNC: a GETATTR), 'default' lets it
 * use what the lookup returned.
 */
async function statAll(dir: string, cached: 'never' | 'default'): Promise<string[]> {
  const r = await runProcess('sh', ['-c', 'cd "$1" && find . -print0 | xargs -0 stat --cached="$2" --printf "%n\\t%i %f %h %u %g %s %b %t:%T %.9X %.9Y %.9Z\\0"', 'sh', dir, cached]);
  return r.stdout.split('\0').filter(Boolean);
}

/** getfattr's dump of every xattr of every entry (all namespaces it can see). */
async function xattrDump(dir: string): Promise<string> {
  const r = await runProcess('sh', ['-c', 'cd "$1" && getfattr -R -h -d -m - -e hex . 2>&1', 'sh', dir], { allowFail: true });
  return r.stdout;
}

/** Every regular file's bytes below `dir` equal the source's, read by two readers at once. */
async function sameBytes(t: { equal(a: unknown, b: unknown, m: string): void }, src: string, dir: string, how: string): Promise<void> {
  const sums = (d: string) => runProcess('sh', ['-c', 'cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum', 'sh', d]);
  const all = (d: string) => runProcess('sh', ['-c', 'cd "$1" && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum', 'sh', d]);
  const [expectedSums, expectedAll] = [await sums(src), await all(src)];
  const [gotSums, gotAll] = await Promise.all([sums(dir), all(dir)]);
  t.equal(gotSums.stdout, expectedSums.stdout, `every file's sha256 is the source's (${how})`);
  t.equal(gotAll.stdout, expectedAll.stdout, `the same bytes for a second reader at the same time (${how})`);
}

t.test('the binding answers like JS: stat, xattrs, remounts, live nodes', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-fastpath');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await generateFidelityTree(src, { chunk, bigFileBytes: 2 * 1024 * 1024 });
  await initRepo(repo);
  const first = await backup(repo, src, 'host/fast');
  await fs.mkdir(mnt);
  const dated = path.join(mnt, 'host', 'fast', first.name);
  const last = path.join(mnt, 'host', 'fast', 'last') + '/';

  // Reference: every request answered by JS.
  let m = await mountForeground(t, repo, mnt, [], { SNAPFS_FUSE_NO_CACHE: '1' });
  await sameBytes(t, src, dated, 'opened by JS');
  const reference = await statAll(dated, 'never');
  const referenceXattrs = await xattrDump(dated);
  // Namespaces the mount does not show answer EOPNOTSUPP, not ENODATA: ls -l caches that per
  // device instead of asking for its ACL and SELinux marks on every file.
  const unshownNamespaces = async (file: string): Promise<string[]> =>
    Promise.all(['security.selinux', 'system.posix_acl_access'].map(async (n) => (await runProcess('getfattr', ['-n', n, file], { allowFail: true })).stderr.replace(/^.*: /, '').trim()));
  const referenceUnshown = await unshownNamespaces(path.join(dated, 'xattrs', 'file'));
  t.same(referenceUnshown, ['Operation not supported', 'Operation not supported'], 'JS: security.selinux and system.posix_acl_access are not supported');
  await m.stop();
  t.ok(reference.length > 50, `${reference.length} entries to compare`);
  t.match(referenceXattrs, /user\.text=0x68656c6c6f/, 'the reference shows stored user.* xattrs');

  for (const round of [1, 2]) {
    m = await mountForeground(t, repo, mnt);
    t.same(await statAll(dated, 'default'), reference, `mount ${round}: stat after lookup (cold) is JS's answer`);
    t.same(await statAll(dated, 'never'), reference, `mount ${round}: forced getattr, answered from the binding's cache, is the same`);
    t.same(await statAll(last, 'never'), reference, `mount ${round}: the same through last/`);
    // Looked up above, so every file is now opened by the binding (fh 0, reads by node).
    await sameBytes(t, src, dated, `mount ${round}, opened by the binding`);
    await sameBytes(t, src, last, `mount ${round}, through last/, opened by the binding`);
    t.equal(await xattrDump(dated), referenceXattrs, `mount ${round}: getfattr -R -d of every entry is the same`);
    const file = path.join(dated, 'xattrs', 'file');
    t.equal((await runProcess('getfattr', ['--only-values', '-n', 'user.text', file])).stdout, 'hello', 'getfattr of a stored user.* xattr works');
    t.same(await unshownNamespaces(file), referenceUnshown, `mount ${round}: security.* and system.* are not supported, as from JS`);
    t.match((await runProcess('getfattr', ['-n', 'user.none', file], { allowFail: true })).stderr, /No such attribute/, 'a user.* name not stored: No such attribute');
    const plain = await runProcess('getfattr', ['-d', '-m', '-', path.join(dated, 'xattrs')], { allowFail: true });
    t.equal(plain.stdout, '', 'an entry without xattrs lists none');
    if (round === 1) await m.stop();
  }

  // Live nodes are never answered from the cache for long: a new backup shows within 2 s.
  const sourceDir = path.join(mnt, 'host', 'fast');
  const before = (await statAll(sourceDir, 'never')).find((l) => l.startsWith('.\t'))!;
  for (let i = 0; i < 20; i++) await fs.readlink(path.join(sourceDir, 'last')); // warm the reused target
  await fs.writeFile(path.join(src, 'new-file'), 'new\n');
  const second = await backup(repo, src, 'host/fast');
  const committed = Date.now();
  const moved = await waitFor(async () => (await fs.readlink(path.join(sourceDir, 'last'))) === second.name, 5000, 20);
  const movedMs = Date.now() - committed;
  t.ok(moved && movedMs < 2000, `last moved to the new snapshot within 2 s (${movedMs} ms)`);
  const changed = await waitFor(async () => (await statAll(sourceDir, 'never')).find((l) => l.startsWith('.\t')) !== before, 5000, 20);
  const changedMs = Date.now() - committed;
  t.ok(changed && changedMs < 2000, `the source dir's attributes changed within 2 s (${changedMs} ms)`);
  t.equal(await fs.readFile(path.join(last, 'new-file'), 'utf8'), 'new\n', 'last/ shows the new snapshot');
  t.same(await statAll(dated, 'never'), reference, 'the first snapshot still stats the same');
  await m.stop();

  // Lookups answered by the binding from a listing: once a lookup in a directory reached
  // JS, its readdir replies carry each name's node, and the lookups that follow (ls -l,
  // find | stat) never reach JS. Same answers; and JS still knows every node the kernel
  // got that way (reading a file opens it by node id, rebuilt from the trees).
  m = await mountForeground(t, repo, mnt);
  await runProcess('sh', ['-c', `cd "$1" && find . -type d -print0 | xargs -0 -n1 sh -c 'for f in "$1"/* "$1"/.[!.]*; do if [ -e "$f" ] || [ -L "$f" ]; then stat "$f" >/dev/null; break; fi; done' sh`, 'sh', dated]);
  t.same(await statAll(dated, 'default'), reference, 'stat after lookups answered from listings is JS\'s answer');
  t.same(await statAll(dated, 'never'), reference, 'forced getattr after them too');
  const sums = async (dir: string): Promise<string> =>
    (await runProcess('sh', ['-c', 'cd "$1" && find . -type f -print0 | xargs -0 md5sum | sort', 'sh', dir])).stdout;
  const expected = (await sums(src)).split('\n').filter((l) => !l.endsWith('./new-file')).join('\n'); // added after `dated`
  t.ok(expected.split('\n').length > 20, 'files to read');
  t.equal(await sums(dated), expected, 'every file reads back (opened by node ids JS learned from the binding)');
  // Read in directory order, most small files came from the binding's read-ahead: pushed
  // into the page cache, or their reads answered from its store.
  const read = (await serverMemory(m)).requests;
  const aheadReads = read['READ of files read ahead'] ?? 0;
  const pushed = read['files pushed'] ?? 0;
  t.ok(aheadReads + pushed >= 5, `files read ahead, with the same bytes (${pushed} pushed, ${aheadReads} reads answered from the store; test/mount-readahead waits for the read-ahead and counts exactly)`);
  await m.stop();

  // A walk that stats every name (the tape job's tar): once it has looked up a file, the
  // directories it goes into are listed with their nodes before it looks anything up in
  // them, so its lookups are answered by the binding from the start. The archive lists
  // exactly what an archive of the source does.
  m = await mountForeground(t, repo, mnt);
  const listing = async (dir: string): Promise<string[]> =>
    (await runProcess('sh', ['-c', 'tar -C "$1" --sort=name -cf - . | tar -tvf -', 'sh', dir])).stdout.split('\n').filter((l) => l && !l.endsWith('./new-file') && !l.endsWith(' ./')); // added since, and so the root's mtime
  const fromMount = await listing(dated);
  t.same(fromMount, await listing(src), 'tar of the snapshot lists the same entries, modes, owners, sizes and times as tar of the source');
  const { fromListings, held, requests } = await serverMemory(m);
  t.ok(fromListings >= held * 0.5, `most of tar's lookups were answered from listings (${fromListings} of ${held} held nodes)`);
  // Files are opened by the kernel itself (FUSE_NO_OPEN_SUPPORT, Linux 4.19+): after the
  // first open answers ENOSYS, no open or release is sent, only reads.
  const [major, minor] = os.release().split('.').map(Number) as [number, number];
  if (major > 4 || (major === 4 && minor >= 19)) {
    // (Files read ahead are pushed into the page cache: tar reads them without a READ.)
    const read = (requests.READ ?? 0) + (requests['files pushed'] ?? 0);
    t.ok(read > 20 && (requests.OPEN ?? 0) <= 1 && !requests.RELEASE, `tar read every file without open or release requests (${JSON.stringify(requests)})`);
  }
});
