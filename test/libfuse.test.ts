// The low-level FUSE binding (native/src/fuse_ll.c, lib/platform/libfuse.ts),
// exercised with real tools against an in-memory filesystem served by a CHILD
// process (test/fixtures/memfs-server.ts). This process never serves a mount and
// only runs asynchronous child processes and async fs calls, so it cannot
// deadlock with the server.

import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp, constants as C } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from './helpers/cli.js';
import { MemfsServer, mountPoints } from './helpers/memfs.js';
import { listXattrs, setXattr } from '../lib/platform/native.js';
import { replyErr, shippedLibfuse, type FuseRequest } from '../lib/platform/libfuse.js';
import * as D from './fixtures/memfs-data.js';

// ---- helpers ----

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function run(cmd: string, args: string[], env?: Record<string, string>) {
  return runProcess(cmd, args, { allowFail: true, timeoutMs: 120_000, env });
}

async function mustFail(t: any, what: string, cmd: string, args: string[], pattern: RegExp): Promise<void> {
  const r = await run(cmd, args);
  t.not(r.code, 0, `${what} fails`);
  t.match(r.stderr, pattern, `${what}: ${r.stderr.trim()}`);
}

/** Exit code of a server that should end by itself, or 'still running' after 20 s. */
const exitOf = (s: MemfsServer): Promise<number | null | string> =>
  Promise.race([s.exited, sleep(20_000).then(() => 'still running')]);

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

// ---- setup ----

try {
  await fsp.access('/dev/fuse', C.R_OK | C.W_OK);
} catch {
  t.plan(0, 'no usable /dev/fuse');
  process.exit(0);
}

const work = await fsp.mkdtemp(join(tmpdir(), 'snapfs-libfuse-'));
const mntA = join(work, 'a');
const mntA2 = join(work, 'a2');
const mntB = join(work, 'b');
for (const d of [mntA, mntA2, mntB]) await fsp.mkdir(d);
const servers: MemfsServer[] = [];

// One teardown, in order: stop servers (they unmount), then make sure nothing
// stays mounted, then remove the directory. Runs on failure too.
t.teardown(async () => {
  for (const s of servers) await s.stop();
  const mounted = await mountPoints();
  for (const m of [mntA, mntA2, mntB]) {
    if (mounted.has(m)) await run('umount', ['-l', m]);
  }
  await fsp.rm(work, { recursive: true, force: true });
});

const roOptions = ['ro', 'default_permissions', 'fsname=memfs', 'subtype=memfs'];
const serverA = await MemfsServer.start('server A', {
  mounts: [{ path: mntA, options: roOptions }, { path: mntA2, options: ['ro', 'fsname=memfs2', 'subtype=memfs'] }],
});
servers.push(serverA);
const shipped = shippedLibfuse();
// Server B: the copy of libfuse shipped in node_modules, and no 'ro' mount
// option, so the binding's own EROFS answers are what stop writes.
const serverB = await MemfsServer.start('server B', {
  mounts: [{ path: mntB, options: ['default_permissions', 'fsname=memfs-rw', 'subtype=memfs'] }],
}, shipped ? { SNAPFS_LIBFUSE: shipped } : undefined);
servers.push(serverB);
const readyA = await serverA.next((e) => e.event === 'ready');
const readyB = await serverB.next((e) => e.event === 'ready');

t.test('mounted with the requested options, libfuse loaded at run time', async (t) => {
  t.same(readyA.mounts, [mntA, mntA2]);
  // The system's libfuse.so.2 first when the dynamic loader knows one, else the shipped copy.
  const systemHas = /\slibfuse\.so\.2\s/.test((await run('ldconfig', ['-p'])).stdout);
  t.equal(readyA.libfuse, systemHas ? 'libfuse.so.2' : shipped, `the system libfuse.so.2 first (${systemHas ? 'present' : 'absent'} here)`);
  if (shipped) t.equal(readyB.libfuse, shipped, 'the shipped copy when asked (SNAPFS_LIBFUSE)');
  const m = await mountPoints();
  t.match(m.get(mntA), /^fuse\.memfs ro,/, 'type fuse.memfs, read-only');
  t.match(m.get(mntB), /^fuse\.memfs rw,/, 'mount B has no ro flag');
  const { stdout } = await run('mount', []);
  t.match(stdout, new RegExp(`^memfs on ${mntA} type fuse\\.memfs \\(ro,.*default_permissions`, 'm'));
});

t.test('raw-byte names and symlink targets', async (t) => {
  const names = await fsp.readdir(mntA, { encoding: 'buffer' });
  t.ok(names.some((n) => n.equals(D.RAW_NAME)), 'readdir returns the name bytes 66 ff fe');
  const ls = await run('ls', ['-f', '--quoting-style=escape', mntA]);
  t.match(ls.stdout, /^f\\377\\376$/m, 'ls -f shows f\\377\\376');
  const raw = Buffer.concat([Buffer.from(mntA + '/'), D.RAW_NAME]);
  t.same(await fsp.readFile(raw), D.RAW_CONTENT, 'content under the raw name');
  t.equal((await run('readlink', [join(mntA, D.LINK)])).stdout, `${D.LINK_TARGET}\n`, 'readlink');
  const target = await fsp.readlink(Buffer.from(join(mntA, D.RAW_LINK)), { encoding: 'buffer' });
  t.same(target, D.RAW_NAME, 'raw-byte symlink target');
  t.equal((await run('cat', [join(mntA, D.LINK)])).stdout, D.NS_CONTENT.toString(), 'cat through the symlink');
});

t.test('nanosecond mtime and 64-bit inode numbers', async (t) => {
  const f = join(mntA, D.NS_FILE);
  const r = await run('stat', ['-c', '%i %Y %y', f], { TZ: 'UTC' });
  t.equal(r.stdout.trim(), `${D.NS_INO} 1700000000 2023-11-14 22:13:20.123456789 +0000`);
  const st = await fsp.stat(f, { bigint: true });
  t.equal(st.ino, D.NS_INO, 'st_ino 0x123456789abcdef0');
  t.equal(st.mtimeNs, D.NS_MTIME, 'mtime ns exact');
  const lsi = await run('ls', ['-if', mntA]);
  t.match(lsi.stdout, new RegExp(`^${D.NS_INO} ${D.NS_FILE}$`, 'm'), 'readdir d_ino is the 64-bit number too');
});

t.test('two directories: different node ids, same st_ino', async (t) => {
  const r = await run('stat', ['-c', '%i', join(mntA, D.DIR_A), join(mntA, D.DIR_B)]);
  t.equal(r.stdout, `${D.SHARED_INO}\n${D.SHARED_INO}\n`, 'same st_ino');
  t.same(await fsp.readdir(join(mntA, D.DIR_A)), ['onlyA'], 'dirA has its own entries');
  t.same(await fsp.readdir(join(mntA, D.DIR_B)), ['onlyB'], 'dirB has its own entries');
  t.equal(await fsp.readFile(join(mntA, D.DIR_B, 'onlyB'), 'utf8'), 'B\n');
  t.equal(await fsp.readFile(join(mntA, D.DIR_A, 'onlyA'), 'utf8'), 'A\n');
});

t.test('5 MiB file read in parallel', async (t) => {
  const expected = D.fiveContent();
  const f = join(mntA, 'five');
  const ref = join(work, 'five.expected');
  await fsp.writeFile(ref, expected);
  // several cmp processes at once, plus many concurrent positioned reads from here
  const cmps = Array.from({ length: 6 }, () => run('cmp', [f, ref]));
  const fh = await fsp.open(f, 'r');
  const chunk = 160 * 1024;
  const parts = await Promise.all(Array.from({ length: Math.ceil(D.FIVE_SIZE / chunk) }, async (_, i) => {
    const b = Buffer.alloc(chunk);
    const { bytesRead } = await fh.read(b, 0, chunk, i * chunk);
    return b.subarray(0, bytesRead);
  }));
  await fh.close();
  t.equal(sha(Buffer.concat(parts)), sha(expected), 'positioned parallel reads give the content');
  for (const r of await Promise.all(cmps)) t.equal(r.code, 0, `cmp identical ${r.stderr}`);
  const stats = await serverA.stats();
  t.ok(stats.maxInflightReads > 1, `several reads were in flight at once (max ${stats.maxInflightReads})`);
});

t.test('directory with 20,000 entries', async (t) => {
  const dir = join(mntA, D.BIG_DIR);
  const before = (await serverA.stats()).readdirCalls;
  const r = await run('sh', ['-c', `ls ${dir} | wc -l`]);
  t.equal(r.stdout.trim(), String(D.BIG_COUNT), 'ls | wc -l');
  const names = await fsp.readdir(dir);
  t.equal(names.length, D.BIG_COUNT);
  t.same(names.slice(0, 3), [D.bigName(0), D.bigName(1), D.bigName(2)]);
  t.equal(names.at(-1), D.bigName(D.BIG_COUNT - 1));
  t.equal(new Set(names).size, D.BIG_COUNT, 'no duplicates across pages');
  const calls = (await serverA.stats()).readdirCalls - before;
  t.ok(calls > 10, `paged over ${calls} readdir requests`);
  const st = await fsp.stat(join(dir, D.bigName(12345)));
  t.ok(st.isFile(), 'lookup inside the big directory');
});

t.test('xattrs and statfs', async (t) => {
  const x = listXattrs(join(mntA, D.XATTR_FILE));
  t.same(x.map(([k, v]) => [k.toString(), v]), D.XATTRS, 'listxattr + getxattr (size probe, then data)');
  t.same(listXattrs(join(mntA, D.NS_FILE)), [], 'no xattrs');
  const which = await run('sh', ['-c', 'command -v getfattr']);
  if (which.code === 0) {
    const g = await run('getfattr', ['-d', '-e', 'hex', join(mntA, D.XATTR_FILE)]);
    t.match(g.stdout, /user\.snapfs=0x686900ff/);
  }
  const f = await run('stat', ['-f', '-c', '%S %b %l', mntA]);
  t.equal(f.stdout.trim(), '4096 1000 255', 'statfs');
});

t.test('handler errors, double replies, bad handles', async (t) => {
  await t.rejects(fsp.stat(join(mntA, 'nonexistent')), { code: 'ENOENT' }, 'negative entry');
  await t.rejects(fsp.stat(join(mntA, 'double-reply')), { code: 'ENOENT' }, 'first reply wins');
  await t.rejects(fsp.stat(join(mntA, 'throws-eacces')), { code: 'EACCES' }, 'thrown err.code becomes the errno');
  await t.rejects(fsp.stat(join(mntA, 'rejects-plain')), { code: 'EIO' }, 'a rejection without code is EIO');
  const stats = await serverA.stats();
  t.equal(stats.doubleReply, 'ERR_FUSE_ALREADY_REPLIED', 'a second reply throws');
  t.equal(stats.badHandle, 'TypeError/ERR_INVALID_ARG_TYPE', 'a non-handle throws a TypeError');
  t.equal(stats.badAttr, 'TypeError/ERR_INVALID_ARG_TYPE', 'a malformed attr throws and leaves the request open');
  t.same(stats.handlerErrors, ['lookup: denied by test', 'lookup: plain failure'], 'onError saw both');
  await t.rejects(fsp.readFile(join(mntA, D.DROPPED)), { code: 'EIO' },
    'a request handle dropped without a reply is answered EIO when collected');
  t.equal((await serverA.stats()).dropped, 1);
  t.throws(() => replyErr({} as FuseRequest, 1), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' },
    'also here, in a process that serves nothing');
});

t.test('writes fail with EROFS (ro mount)', async (t) => {
  const f = join(mntA, D.NS_FILE);
  await mustFail(t, 'touch', 'touch', [f], /Read-only file system/);
  await mustFail(t, 'mkdir', 'mkdir', [join(mntA, 'newdir')], /Read-only file system/);
  await mustFail(t, 'rm', 'rm', ['-f', f], /Read-only file system/);
});

t.test('writes fail with EROFS from the binding itself (no ro mount option)', async (t) => {
  const f = join(mntB, D.NS_FILE);
  const ro = /Read-only file system/;
  await mustFail(t, 'touch (atime + mtime)', 'touch', [f], ro);
  await mustFail(t, 'mkdir', 'mkdir', [join(mntB, 'newdir')], ro);
  await mustFail(t, 'rm', 'rm', ['-f', f], ro);
  await mustFail(t, 'rmdir', 'rmdir', [join(mntB, D.DIR_A)], ro);
  await mustFail(t, 'mv', 'mv', [f, join(mntB, 'renamed')], ro);
  await mustFail(t, 'ln -s', 'ln', ['-s', 'x', join(mntB, 'sym')], ro);
  await mustFail(t, 'ln', 'ln', [f, join(mntB, 'hard')], ro);
  await mustFail(t, 'chmod', 'chmod', ['600', f], ro);
  await mustFail(t, 'truncate', 'truncate', ['-s', '0', f], ro);
  await mustFail(t, 'create', 'sh', ['-c', `echo x > ${join(mntB, 'newfile')}`], ro);
  await mustFail(t, 'append', 'sh', ['-c', `echo x >> ${f}`], ro);
  t.throws(() => setXattr(f, 'user.x', Buffer.from('y')), { code: 'EROFS' }, 'setxattr');
  const ok = await run('touch', ['-a', f]);
  t.equal(ok.code, 0, `an atime-only touch is accepted as a no-op ${ok.stderr}`);
  const st = await fsp.stat(f, { bigint: true });
  t.equal(st.mtimeNs, D.NS_MTIME, 'mtime unchanged');
});

t.test('sequential read throughput, 256 MiB (no assertion)', async (t) => {
  const f = join(mntA, 'huge');
  for (const [label, cmd] of [['dd bs=1M', `dd if=${f} of=/dev/null bs=1M`], ['cat', `cat ${f} > /dev/null`]] as const) {
    const start = process.hrtime.bigint();
    const r = await run('sh', ['-c', cmd]);
    const sec = Number(process.hrtime.bigint() - start) / 1e9;
    t.equal(r.code, 0, `${label} ${r.stderr}`);
    t.comment(`${label}: 256 MiB in ${sec.toFixed(3)} s = ${(D.HUGE_SIZE / 1e6 / sec).toFixed(0)} MB/s`);
  }
  const head = await run('sh', ['-c', `head -c 3145728 ${f} | sha256sum`]);
  const block = D.hugeBlock();
  t.equal(head.stdout.split(' ')[0], sha(Buffer.concat([block, block, block])), 'content is right');
});

t.test('unmount with a request outstanding', async (t) => {
  const cat = spawn('cat', [join(mntB, D.HANG)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let catErr = '';
  cat.stderr!.on('data', (b: Buffer) => (catErr += b.toString()));
  const catExit = new Promise<number | null>((r) => cat.once('exit', (code) => r(code)));
  t.teardown(() => {
    if (cat.exitCode === null) cat.kill('SIGKILL');
  });
  for (let i = 0; i < 200 && (await serverB.stats()).hangPending < 1; i++) await sleep(50);
  t.ok((await serverB.stats()).hangPending >= 1, 'the read is held by the server');

  serverB.send({ cmd: 'unmount', index: 0 });
  const busy = await serverB.next((e) => e.event.startsWith('unmount'));
  t.equal(busy.event, 'unmount-error', 'a plain unmount of a busy mount fails');
  t.equal(busy.code, 'EBUSY', busy.message);
  t.ok((await mountPoints()).has(mntB), 'still mounted');

  serverB.send({ cmd: 'unmount', index: 0, force: true });
  t.equal((await serverB.next((e) => e.event.startsWith('unmount'))).event, 'unmounted', 'force unmount');
  await serverB.next((e) => e.event === 'closed' && e.index === 0);
  const code = await catExit;
  t.not(code, 0, `the blocked reader gets an error: ${catErr.trim()}`);
  const exit = await serverB.next((e) => e.event === 'exit');
  t.same(exit.stats.lateReplies, [false], 'a reply after the end is dropped (false), not thrown');
  t.equal(await exitOf(serverB), 0, 'server B exits by itself');
  t.notOk((await mountPoints()).has(mntB), 'nothing left mounted');
});

t.test('unmount by `umount` and by session.unmount()', async (t) => {
  const u = await run('umount', [mntA2]);
  t.equal(u.code, 0, `umount ${u.stderr}`);
  await serverA.next((e) => e.event === 'closed' && e.index === 1);
  t.pass('the session noticed the external unmount');
  t.ok(serverA.running, 'the other session keeps serving');
  t.equal((await fsp.readFile(join(mntA, D.NS_FILE))).toString(), D.NS_CONTENT.toString());

  serverA.send({ cmd: 'unmount', index: 0 });
  t.equal((await serverA.next((e) => e.event.startsWith('unmount'))).event, 'unmounted');
  await serverA.next((e) => e.event === 'closed' && e.index === 0);
  t.equal(await exitOf(serverA), 0, 'server A exits once all its sessions ended');
  const { stdout } = await run('mount', []);
  const ours = stdout.split('\n').filter((l) => /fuse/.test(l) && l.includes(work));
  t.same(ours, [], 'mount | grep fuse shows none of ours');
});

t.test('mount failures are clear errors', async (t) => {
  const file = join(work, 'plainfile');
  await fsp.writeFile(file, 'x');
  const full = join(work, 'nonempty');
  await fsp.mkdir(full);
  await fsp.writeFile(join(full, 'x'), 'x');
  const empty = join(work, 'empty');
  await fsp.mkdir(empty);
  const probes = [
    { path: join(work, 'missing'), options: ['ro'] },
    { path: file, options: ['ro'] },
    { path: full, options: ['ro'] },
    { path: empty, options: ['ro', 'noforget'] },
    { path: empty, options: ['ro', 'bogus_option_xyz'] },
  ];
  const s = await MemfsServer.start('probe', { probes });
  servers.push(s);
  const { results } = await s.next((e) => e.event === 'probes');
  t.match(results[0], { ok: false, code: 'ENOENT', syscall: 'mount' });
  t.match(results[1], { ok: false, code: 'ENOTDIR' });
  t.match(results[2], { ok: false, code: 'ENOTEMPTY', message: /nonempty/ });
  t.match(results[3], { ok: false, code: 'ERR_FUSE_OPTION', message: /high-level/ });
  t.match(results[4], { ok: false, code: 'EINVAL', syscall: 'fuse_lowlevel_new' });
  t.match(s.stderr, /unknown option `bogus_option_xyz'/, 'libfuse said which option');
  t.equal(await exitOf(s), 0);
  t.notOk((await mountPoints()).has(empty), 'the failed mount left nothing mounted');
});
