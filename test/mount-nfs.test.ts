// NFS re-export: the mount, started with --nfs (noforget), exported read-only by
// NFS-Ganesha's VFS FSAL with an explicit Filesystem_id, read back over NFS v3 and v4
// with libnfs's nfs-ls and nfs-cp. This kernel has no NFS server or client, so the pair
// is user space; both run in a network namespace the test creates, with only loopback up.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, constants as C } from 'node:fs';
import path from 'node:path';
import { generateFidelityTree, isRoot } from './helpers/tree-gen.js';
import { compareTrees } from './helpers/tree-compare.js';
import { runProcess, tmpDir } from './helpers/cli.js';
import { applyMountNameSpelling, backup, compareMtimesMs, fuseAvailable, initRepo, mountForeground, waitFor } from './helpers/mount.js';

async function have(...tools: string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const tool of tools) {
    const found = await Promise.any(
      ['/usr/bin', '/usr/sbin', '/bin', '/sbin'].map((d) => fs.access(path.join(d, tool), C.X_OK)),
    ).then(() => true, () => false);
    if (!found) missing.push(tool);
  }
  return missing;
}

const missing = await have('ganesha.nfsd', 'rpcbind', 'nfs-ls', 'nfs-cp', 'ip');
const ganeshaVfs = await fs.access('/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so').then(() => true, () => false);
const skip = !(await fuseAvailable())
  ? 'needs /dev/fuse'
  : !isRoot
    ? 'needs root (network namespace, NFS server)'
    : missing.length || !ganeshaVfs
      ? `needs ${[...missing, ...(ganeshaVfs ? [] : ['nfs-ganesha-vfs'])].join(', ')} (.ci/run installs them)`
      : false;

interface Expected {
  rel: string;
  type: 'd' | '-' | 'l';
  mode: number;
  uid: number;
  gid: number;
  size: number;
}

/** nfs-ls line: "-rw-r--r--  1     0     0      1048576 name". */
function parseLs(out: string): Map<string, { type: string; perms: string; uid: number; gid: number; size: number }> {
  const m = new Map<string, { type: string; perms: string; uid: number; gid: number; size: number }>();
  for (const line of out.split('\n')) {
    const r = /^([-dl])([-rwxsStT]{9})\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s(.*)$/.exec(line);
    if (r) m.set(r[6]!.replace(/ -> .*$/, ''), { type: r[1]!, perms: r[2]!, uid: Number(r[3]), gid: Number(r[4]), size: Number(r[5]) });
  }
  return m;
}

function perms(mode: number): string {
  const rwx = (b: number) => (b & 4 ? 'r' : '-') + (b & 2 ? 'w' : '-') + (b & 1 ? 'x' : '-');
  return rwx(mode >> 6) + rwx(mode >> 3) + rwx(mode);
}

t.test('exported by NFS-Ganesha, the snapshot reads back identical over NFS v3 and v4', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-nfs');
  await fs.chmod(work, 0o755);
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(path.join(src, 'mail', 'cur'), { recursive: true });
  await fs.mkdir(path.join(src, 'empty'));
  const files: Record<string, Buffer> = {
    'small.txt': Buffer.from('small\n'),
    'mail/cur/1.eml': Buffer.from('From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n'),
    'mail/cur/2.eml': Buffer.alloc(70_000, 'x'),
    'random.bin': (await import('node:crypto')).randomBytes(3 * 1024 * 1024 + 17),
    'café.txt': Buffer.from('utf-8 name\n'),
  };
  for (const [rel, data] of Object.entries(files)) await fs.writeFile(path.join(src, rel), data);
  await fs.chmod(path.join(src, 'small.txt'), 0o640);
  await fs.chown(path.join(src, 'mail/cur/1.eml'), 1234, 5678);
  await fs.symlink('small.txt', path.join(src, 'link'));
  await fs.chmod(src, 0o755);
  await initRepo(repo);
  const snap = await backup(repo, src, 'mail');
  await fs.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt, ['--nfs', '--allow-other']);
  t.ok(m.info.options.includes('noforget'), '--nfs mounts with noforget');

  // The network namespace, with its own /run for rpcbind and Ganesha.
  const ns = `snapfs-nfs-${process.pid}`;
  await runProcess('ip', ['netns', 'add', ns]);
  t.teardown(() => runProcess('ip', ['netns', 'del', ns], { allowFail: true }).then(() => undefined));
  await runProcess('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  const conf = path.join(work, 'ganesha.conf');
  await fs.writeFile(
    conf,
    `NFS_CORE_PARAM {
    Protocols = 3, 4;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}
NFSV4 {
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = ${work}/recovery;
}
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
    Export_Id = 1;
    Path = ${mnt};
    Pseudo = /snapfs;
    Access_Type = RO;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    Filesystem_id = 7001.1;
    FSAL { Name = VFS; }
}
`,
  );
  const log = path.join(work, 'ganesha.log');
  const script = `
set -e
mount -t tmpfs tmpfs /run
rpcbind -f -w & rp=$!
# Ganesha registers its v3 services with rpcbind once, at start: rpcbind must be up.
i=0; until rpcinfo -p 127.0.0.1 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 200 ] || exit 1; sleep 0.05; done
ganesha.nfsd -F -L "$1" -f "$2" -p /run/ganesha.pid & gp=$!
# A test server keeps no state worth a graceful shutdown (Ganesha's takes 15 s).
trap 'kill -9 $gp $rp 2>/dev/null; wait' TERM INT
wait $gp
`;
  const server: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'sh', '-c', script, 'sh', log, conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let serverOut = '';
  server.stdout!.on('data', (b: Buffer) => (serverOut += b));
  server.stderr!.on('data', (b: Buffer) => (serverOut += b));
  t.teardown(async () => {
    if (server.exitCode === null && server.signalCode === null) {
      const gone = new Promise((r) => server.once('exit', r));
      server.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([gone, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
      clearTimeout(timer);
      if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
    }
  });
  const inNs = (cmd: string, ...args: string[]) => runProcess('ip', ['netns', 'exec', ns, cmd, ...args], { allowFail: true, timeoutMs: 60_000 });

  const v3 = (rel: string) => `nfs://127.0.0.1${mnt}/mail/${snap.name}${rel ? '/' + rel : ''}?version=3`;
  const v4 = (rel: string) => `nfs://127.0.0.1/snapfs/mail/${snap.name}${rel ? '/' + rel : ''}?version=4`;
  const up = await waitFor(async () => (await inNs('nfs-ls', v4(''))).code === 0 && (await inNs('nfs-ls', v3(''))).code === 0, 30_000, 250);
  if (!up) {
    t.fail(`the NFS server did not come up:\n${serverOut}\n${await fs.readFile(log, 'utf8').catch(() => '')}`);
    return;
  }

  const expected: Expected[] = [];
  async function walk(rel: string): Promise<void> {
    for (const name of (await fs.readdir(path.join(src, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await fs.lstat(path.join(src, r));
      expected.push({ rel: r, type: st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : '-', mode: st.mode & 0o777, uid: st.uid, gid: st.gid, size: st.isDirectory() ? 0 : st.size });
      if (st.isDirectory()) await walk(r);
    }
  }
  await walk('');

  for (const [version, url] of [['v3', v3], ['v4', v4]] as const) {
    const dirs = ['', ...expected.filter((e) => e.type === 'd').map((e) => e.rel)];
    const seen = new Set<string>();
    for (const dir of dirs) {
      const ls = await inNs('nfs-ls', url(dir));
      t.equal(ls.code, 0, `${version}: nfs-ls ${dir || '.'} ${ls.stderr}`);
      const listed = parseLs(ls.stdout);
      for (const e of expected.filter((x) => path.posix.dirname(x.rel) === (dir || '.'))) {
        const got = listed.get(path.posix.basename(e.rel));
        seen.add(e.rel);
        if (!got) {
          t.fail(`${version}: ${e.rel} missing from the listing`);
          continue;
        }
        t.equal(got.type, e.type, `${version}: ${e.rel} type`);
        if (e.type !== 'l') t.equal(got.perms, perms(e.mode), `${version}: ${e.rel} mode`);
        if (e.type === '-') t.equal(got.size, e.size, `${version}: ${e.rel} size`);
        // NFSv4 passes owners as names, which libnfs does not map back: compare on v3.
        if (version === 'v3') t.same([got.uid, got.gid], [e.uid, e.gid], `${version}: ${e.rel} owner`);
      }
      t.equal([...listed.keys()].filter((n) => n !== '.' && n !== '..').length, expected.filter((x) => path.posix.dirname(x.rel) === (dir || '.')).length, `${version}: ${dir || '.'} lists nothing else`);
    }
    t.equal(seen.size, expected.length, `${version}: every entry listed`);
    for (const [rel, data] of Object.entries(files)) {
      const out = path.join(work, `${version}-${rel.replace(/\//g, '_')}`);
      const cp = await inNs('nfs-cp', url(rel), out); // libnfs takes the path as is, not URL-encoded
      t.equal(cp.code, 0, `${version}: nfs-cp ${rel} ${cp.stderr}`);
      t.ok((await fs.readFile(out).catch(() => Buffer.alloc(0))).equals(data), `${version}: ${rel} reads back byte for byte`);
    }
  }
});

// --nfs mounts are served by fuse-native (libfuse's high-level API, for noforget), which
// passes names as UTF-8 strings and times in milliseconds: the same fidelity checks as
// test/mount.test.ts, against the documented spelling and at the millisecond.
t.test('--nfs (fuse-native): diff -r, cp -a and tar see the source, names spelled as documented', { skip: !(await fuseAvailable()) && 'needs /dev/fuse' }, async (t) => {
  const work = await tmpDir(t, 'mount-nfs-fidelity');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await generateFidelityTree(src, { chunk: { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 }, bigFileBytes: 8 * 1024 * 1024 });
  await initRepo(repo);
  const snap = await backup(repo, src, 'host/fid');
  await fs.mkdir(mnt);
  // The source as fuse-native shows it: each byte b of a name or symlink target that is
  // not valid UTF-8 becomes U+F700+b (docs/mount.md, "Known limits").
  const expected = path.join(work, 'expected');
  await runProcess('cp', ['-a', src, expected]);
  t.ok((await applyMountNameSpelling(expected)) > 0, 'the fidelity tree has non-UTF-8 names to check');

  const m = await mountForeground(t, repo, mnt, ['--nfs']);
  t.ok(m.info.options.includes('use_ino') && m.info.options.includes('noforget'), 'served by fuse-native with use_ino and noforget');
  const dated = path.join(mnt, 'host', 'fid', snap.name);
  const last = path.join(mnt, 'host', 'fid', 'last') + '/';

  // diff cannot compare fifos and device nodes and says so; compareTrees checks them.
  const diff = await runProcess('diff', ['-r', '--no-dereference', expected, dated], { allowFail: true });
  const real = diff.stdout.split('\n').filter(Boolean).filter((l) => !/^File .* is a (fifo|character special file|block special file|socket) while file .* is a \1$/.test(l));
  t.same(real, [], 'diff -r finds no difference');
  // fuse-native passes times in milliseconds: mtime is compared at the millisecond
  // (compareMtimesMs); everything else compareTrees checks is compared exactly.
  t.same(await compareTrees(expected, dated, { ignore: ['mtime'] }), [], 'the snapshot dir matches the source');
  t.same(await compareMtimesMs(expected, dated), [], 'mtimes match to the millisecond');
  const copy = path.join(work, 'copy');
  await runProcess('cp', ['-a', last, copy]);
  t.same(await compareTrees(expected, copy, { ignore: ['mtime'] }), [], 'cp -a of last/ reproduces the source');
  t.same(await compareMtimesMs(expected, copy), [], 'copied mtimes match to the millisecond');
  const list = (dir: string) => runProcess('sh', ['-c', 'tar --sort=name -cf - -C "$1" . | tar -tvf -', 'sh', dir]);
  const [a, b] = await Promise.all([list(expected), list(last)]);
  t.equal(b.stdout, a.stdout, 'tar -c of last/ lists the same entries as of the source');
});
