import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import {
  cdcCuts, dataRegions, decodeScan, scanRecords, flock, funlock, listXattrs, mknod, newFile, preadCached, dropCachedPages, projectRoot, setMmapThreshold, setTrimThreshold, trimMalloc, zstdDecompress,
  scanDir, scanDirs, setXattr, utimensNoFollow, type NativeError,
} from '../lib/platform/native.js';
import { onTmpfs } from './helpers/cli.js';

const { S_IFIFO, S_IFSOCK, S_IFCHR, S_IFMT } = fs.constants;

const work = fs.mkdtempSync(join(tmpdir(), 'snapfs-native-'));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

/** Small deterministic PRNG (mulberry32) so failures are reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const gear = Buffer.alloc(2048);
for (let i = 0; i < 256; i++) createHash('sha256').update(`snapfs-gear-${i}`).digest().copy(gear, i * 8, 0, 8);

interface Params { min: number; avg: number; max: number }
const P64K: Params = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };
const P8K: Params = { min: 2 * 1024, avg: 8 * 1024, max: 64 * 1024 };
const P1K: Params = { min: 256, avg: 1024, max: 8 * 1024 };

const cutAll = (data: Uint8Array, p: Params): number[] =>
  Array.from(cdcCuts(data, 0, data.length, true, gear, p.min, p.avg, p.max));

/** Feeds data through separate buffers of random sizes, carrying the uncut tail. */
function cutStreamed(data: Buffer, p: Params, next: () => number): number[] {
  const out: number[] = [];
  let tail = Buffer.alloc(0);
  let base = 0; // absolute offset of tail[0]
  let pos = 0;
  while (pos < data.length) {
    const piece = data.subarray(pos, Math.min(data.length, pos + next()));
    pos += piece.length;
    const win = tail.length ? Buffer.concat([tail, piece]) : piece;
    const eof = pos === data.length;
    const cuts = cdcCuts(win, 0, win.length, eof, gear, p.min, p.avg, p.max);
    for (const c of cuts) out.push(base + c);
    const last = cuts.length ? cuts[cuts.length - 1]! : 0;
    tail = Buffer.from(win.subarray(last));
    base += last;
  }
  return out;
}

/** Same, but growing `end` over one buffer and restarting at the last cut. */
function cutWindowed(data: Buffer, p: Params, next: () => number): number[] {
  const out: number[] = [];
  let start = 0;
  let end = 0;
  while (end < data.length) {
    end = Math.min(data.length, end + next());
    const cuts = cdcCuts(data, start, end, end === data.length, gear, p.min, p.avg, p.max);
    out.push(...cuts);
    if (cuts.length) start = cuts[cuts.length - 1]!;
  }
  return out;
}

/** Count of chunks outside [min, max] (the last may be shorter) and the covered length. */
function bounds(cuts: number[], p: Params): { bad: number; covered: number } {
  let prev = 0;
  let bad = 0;
  cuts.forEach((c, i) => {
    const len = c - prev;
    if (len <= 0 || len > p.max || (i < cuts.length - 1 && len < p.min)) bad++;
    prev = c;
  });
  return { bad, covered: prev };
}

t.test('project root and loader', async (tt) => {
  const root = projectRoot();
  tt.equal(JSON.parse(fs.readFileSync(join(root, 'package.json'), 'utf8')).name, 'snapfs', 'root found');
});

t.test('cdcCuts: split independence on 50 MB', async (tt) => {
  const data = randomBytes(50 * 1024 * 1024);
  const t0 = process.hrtime.bigint();
  const whole = cutAll(data, P64K);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`# cdcCuts throughput: ${(data.length / 1e6 / secs).toFixed(0)} MB/s ` +
    `(50 MB, avg 64 KiB, ${whole.length} chunks)`);
  tt.same(bounds(whole, P64K), { bad: 0, covered: data.length }, 'chunk sizes within bounds');

  const seed = (Date.now() ^ process.pid) >>> 0;
  tt.comment(`split seed ${seed}`);
  const r = rng(seed);
  // mostly large pieces, sometimes tiny ones to hit the "need more data" paths
  const size = () => (r() < 0.3 ? 1 + Math.floor(r() * 300) : 1 + Math.floor(r() * 3 * 1024 * 1024));
  tt.same(cutStreamed(data, P64K, size), whole, 'carried tails in separate buffers');
  tt.same(cutWindowed(data, P64K, size), whole, 'growing end over one buffer');

  const small = data.subarray(0, 8 * 1024 * 1024);
  const wholeSmall = cutAll(small, P1K);
  tt.same(cutStreamed(small, P1K, () => 1 + Math.floor(r() * 20000)), wholeSmall, 'small params, streamed');
  tt.same(cutStreamed(small, P1K, () => 1 + Math.floor(r() * 64)), wholeSmall, 'small params, tiny pieces');

  const again = cutAll(data, P64K);
  tt.same(again, whole, 'deterministic across calls');
});

t.test('cdcCuts: chunk sizes', async (tt) => {
  const data = randomBytes(16 * 1024 * 1024);
  for (const p of [P64K, P8K, P1K]) {
    const cuts = cutAll(data, p);
    tt.same(bounds(cuts, p), { bad: 0, covered: data.length }, `avg ${p.avg}: sizes within bounds`);
    const mean = data.length / cuts.length;
    tt.comment(`avg ${p.avg}: ${cuts.length} chunks, mean ${mean.toFixed(0)}`);
    tt.ok(mean >= p.avg / 2 && mean <= p.avg * 2, `mean ${mean.toFixed(0)} near avg ${p.avg}`);
  }
  // A cut-free input (all zeros may or may not match the mask) must still obey max.
  const zeros = Buffer.alloc(1024 * 1024);
  tt.same(bounds(cutAll(zeros, P8K), P8K), { bad: 0, covered: zeros.length }, 'zeros within bounds');
});

t.test('cdcCuts: one-byte insertion changes at most 2 chunks', async (tt) => {
  const a = randomBytes(20 * 1024 * 1024);
  const b = Buffer.concat([Buffer.from([0x42]), a]);
  for (const p of [P8K, P64K]) {
    const hashes = (d: Buffer) => {
      let prev = 0;
      return cutAll(d, p).map((c) => {
        const h = createHash('sha256').update(d.subarray(prev, c)).digest('hex');
        prev = c;
        return h;
      });
    };
    const ha = hashes(a);
    const hb = hashes(b);
    const setA = new Set(ha);
    const setB = new Set(hb);
    const newInB = hb.filter((h) => !setA.has(h)).length;
    const goneFromA = ha.filter((h) => !setB.has(h)).length;
    tt.ok(newInB <= 2, `avg ${p.avg}: ${newInB} of ${hb.length} chunks differ after insertion`);
    tt.ok(goneFromA <= 2, `avg ${p.avg}: ${goneFromA} of ${ha.length} original chunks lost`);
  }
});

t.test('cdcCuts: edges and arguments', async (tt) => {
  const p = P1K;
  const cut = (d: Uint8Array, s: number, e: number, eof: boolean) =>
    Array.from(cdcCuts(d, s, e, eof, gear, p.min, p.avg, p.max));
  const d = randomBytes(100_000);
  tt.same(cut(d, 0, 0, true), [], 'empty input');
  tt.same(cut(d, 5, 5, false), [], 'empty window');
  tt.same(cut(d, 0, p.min, false), [], 'exactly min bytes without eof waits');
  tt.same(cut(d, 0, p.min, true), [p.min], 'exactly min bytes with eof is one chunk');
  tt.same(cut(d, 10, 20, true), [20], 'short final chunk at an offset');
  const full = cut(d, 0, d.length, true);
  const partial = cut(d, 0, d.length, false);
  tt.same(partial, full.slice(0, partial.length), 'without eof: a prefix of the eof result');
  tt.ok(partial.length >= full.length - 1, 'without eof: at most the last chunk withheld');

  // a view with a byteOffset must cut like a copy (offsets relative to the view)
  const view = d.subarray(333);
  tt.same(cut(view, 0, view.length, true), cut(Buffer.from(view), 0, view.length, true), 'view with byteOffset');
  tt.same(cut(new Uint8Array(d), 0, d.length, true), full, 'plain Uint8Array');

  const g = gear;
  const bad: Array<[string, () => unknown]> = [
    ['data not bytes', () => cdcCuts([1, 2] as unknown as Uint8Array, 0, 2, true, g, 256, 1024, 8192)],
    ['data Float64Array', () => cdcCuts(new Float64Array(4) as unknown as Uint8Array, 0, 4, true, g, 256, 1024, 8192)],
    ['start > end', () => cdcCuts(d, 10, 5, true, g, 256, 1024, 8192)],
    ['end > length', () => cdcCuts(d, 0, d.length + 1, true, g, 256, 1024, 8192)],
    ['negative start', () => cdcCuts(d, -1, 5, true, g, 256, 1024, 8192)],
    ['fractional end', () => cdcCuts(d, 0, 5.5, true, g, 256, 1024, 8192)],
    ['NaN', () => cdcCuts(d, 0, NaN, true, g, 256, 1024, 8192)],
    ['eof not boolean', () => cdcCuts(d, 0, 5, 1 as unknown as boolean, g, 256, 1024, 8192)],
    ['gear too short', () => cdcCuts(d, 0, 5, true, g.subarray(8), 256, 1024, 8192)],
    ['avg not power of two', () => cdcCuts(d, 0, 5, true, g, 256, 1000, 8192)],
    ['min > avg', () => cdcCuts(d, 0, 5, true, g, 2048, 1024, 8192)],
    ['max < avg', () => cdcCuts(d, 0, 5, true, g, 256, 1024, 512)],
    ['min 0', () => cdcCuts(d, 0, 5, true, g, 0, 1024, 8192)],
    ['missing args', () => (cdcCuts as unknown as (d: Uint8Array) => unknown)(d)],
  ];
  for (const [what, fn] of bad) tt.throws(fn, TypeError, what);
  tt.throws(() => cdcCuts(d, 0, 5, true, g, 256, 1000, 8192), /avgSize must be a power of two/);
});

t.test('dataRegions', async (tt) => {
  const MiB = 1024 * 1024;
  const f = join(work, 'sparse');
  const fd = fs.openSync(f, 'w+');
  tt.teardown(() => fs.closeSync(fd));
  fs.ftruncateSync(fd, 10 * MiB);
  fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 1 * MiB);
  fs.writeSync(fd, Buffer.alloc(100, 2), 0, 100, 5 * MiB + 100);
  fs.writeSync(fd, Buffer.alloc(1, 3), 0, 1, 10 * MiB - 1);
  fs.fsyncSync(fd);
  const size = fs.fstatSync(fd).size;
  tt.equal(size, 10 * MiB, 'sparse file size');
  const regions = dataRegions(fd, size);
  const pairs: Array<[number, number]> = [];
  for (let i = 0; i < regions.length; i += 2) pairs.push([regions[i]!, regions[i + 1]!]);
  const covers = (a: number, b: number) => pairs.some(([s, e]) => s <= a && b <= e);
  tt.ok(pairs.every(([s, e], i) => s < e && e <= size && (i === 0 || pairs[i - 1]![1] < s)),
    'regions sorted, disjoint, non-empty, within size');
  tt.ok(covers(MiB, MiB + 4096) && covers(5 * MiB + 100, 5 * MiB + 200) && covers(size - 1, size),
    'written ranges are data');
  tt.notOk(covers(0, 1) || covers(3 * MiB, 3 * MiB + 1) || covers(8 * MiB, 8 * MiB + 1), 'holes are not');
  // ext4 (this machine's /tmp) allocates exactly the written 4 KiB blocks
  tt.same(regions, [MiB, MiB + 4096, 5 * MiB, 5 * MiB + 4096, size - 4096, size], 'exact block-aligned map');

  const clamp = (limit: number) => pairs.filter(([s]) => s < limit).flatMap(([s, e]) => [s, Math.min(e, limit)]);
  tt.same(dataRegions(fd, 3 * MiB), clamp(3 * MiB), 'clamped before later regions');
  tt.same(dataRegions(fd, MiB + 100), clamp(MiB + 100), 'clamped inside a region');
  tt.equal(dataRegions(fd, MiB + 100).at(-1), MiB + 100, 'last region ends at the clamp');
  tt.same(dataRegions(fd, 0), [], 'size 0');

  const dense = join(work, 'dense');
  fs.writeFileSync(dense, randomBytes(100_000));
  const dfd = fs.openSync(dense, 'r');
  tt.same(dataRegions(dfd, 100_000), [0, 100_000], 'dense file is one region');
  const b = Buffer.alloc(10);
  fs.readSync(dfd, b, 0, 10, null);
  dataRegions(dfd, 100_000);
  const b2 = Buffer.alloc(10);
  fs.readSync(dfd, b2, 0, 10, null);
  tt.same(b2, fs.readFileSync(dense).subarray(10, 20), 'file offset preserved');
  fs.closeSync(dfd);

  const tailHole = join(work, 'tailhole');
  const tfd = fs.openSync(tailHole, 'w+');
  fs.writeSync(tfd, Buffer.alloc(4096, 7));
  fs.ftruncateSync(tfd, 4 * MiB);
  tt.same(dataRegions(tfd, 4 * MiB), [0, 4096], 'trailing hole');
  tt.same(dataRegions(tfd, 8 * MiB), [0, 4096], 'size beyond EOF (file shrank)');
  fs.closeSync(tfd);

  const empty = fs.openSync(join(work, 'empty'), 'w+');
  tt.same(dataRegions(empty, 0), [], 'empty file');
  tt.same(dataRegions(empty, 100), [], 'empty file, stale size');
  fs.closeSync(empty);

  const err = tt.throws(() => dataRegions(999_999, 10)) as unknown as NativeError;
  tt.match(err, { code: 'EBADF', syscall: 'lseek', errno: -9 }, 'EBADF error shape');
  tt.throws(() => dataRegions(-1, 10), TypeError, 'negative fd');
  tt.throws(() => dataRegions(fd, -1), TypeError, 'negative size');
});

/** Child process holding/probing a flock over a line protocol on stdio. */
class LockChild {
  proc: ChildProcess;
  lines: Interface;
  queue: string[] = [];
  waiters: Array<(s: string) => void> = [];
  constructor(file: string) {
    // the compiled loader next to this compiled test
    const url = new URL('../lib/platform/native.js', import.meta.url).href;
    const script = `
      import { openSync } from 'node:fs';
      import { createInterface } from 'node:readline';
      const n = await import(process.env.NATIVE_URL);
      const fd = openSync(process.env.LOCK_FILE, 'r+');
      const say = (s) => process.stdout.write(s + '\\n');
      say('ready');
      for await (const line of createInterface({ input: process.stdin })) {
        const [cmd, mode] = line.split(' ');
        if (cmd === 'lock') say(String(n.flock(fd, mode !== 'sh', true)));
        else if (cmd === 'block') say(String(n.flock(fd, true, false)));
        else if (cmd === 'unlock') { n.funlock(fd); say('unlocked'); }
        else if (cmd === 'exit') process.exit(0);
      }`;
    this.proc = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, NATIVE_URL: url, LOCK_FILE: file },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.lines = createInterface({ input: this.proc.stdout! });
    this.lines.on('line', (l) => {
      const w = this.waiters.shift();
      if (w) w(l);
      else this.queue.push(l);
    });
  }
  next(): Promise<string> {
    const q = this.queue.shift();
    if (q !== undefined) return Promise.resolve(q);
    return new Promise((res) => this.waiters.push(res));
  }
  send(cmd: string): Promise<string> {
    this.proc.stdin!.write(cmd + '\n');
    return this.next();
  }
}

t.test('flock contention with a child process', async (tt) => {
  const f = join(work, 'lockfile');
  fs.writeFileSync(f, '');
  const fd = fs.openSync(f, 'r+');
  const child = new LockChild(f);
  tt.teardown(() => {
    child.proc.kill();
    fs.closeSync(fd);
  });
  tt.equal(await child.next(), 'ready');

  tt.equal(await child.send('lock ex'), 'true', 'child takes exclusive lock');
  tt.equal(flock(fd, true, true), false, 'parent exclusive refused');
  tt.equal(flock(fd, false, true), false, 'parent shared refused');
  tt.equal(await child.send('unlock'), 'unlocked');

  tt.equal(flock(fd, false, true), true, 'parent shared lock');
  tt.equal(await child.send('lock sh'), 'true', 'child shares it');
  tt.equal(await child.send('lock ex'), 'false', 'child cannot upgrade while parent shares');
  tt.equal(await child.send('unlock'), 'unlocked');

  tt.equal(flock(fd, true, true), true, 'parent upgrades to exclusive');
  const got = child.send('block');
  let answered = false;
  void got.then(() => { answered = true; });
  await new Promise((r) => setTimeout(r, 300));
  tt.equal(answered, false, 'child blocks while parent holds the lock');
  funlock(fd);
  tt.equal(await got, 'true', 'child gets the lock after parent unlocks');
  tt.equal(flock(fd, false, true), false, 'now parent is refused');
  tt.equal(await child.send('unlock'), 'unlocked');
  tt.equal(flock(fd, true, false), true, 'blocking lock when free');
  funlock(fd);

  child.proc.stdin!.write('exit\n');
  await new Promise((r) => child.proc.once('exit', r));

  tt.match(tt.throws(() => flock(999_999, true, true)), { code: 'EBADF', syscall: 'flock' });
  tt.match(tt.throws(() => funlock(999_999)), { code: 'EBADF', syscall: 'flock' });
  tt.throws(() => flock(fd, 1 as unknown as boolean, true), TypeError);
});

t.test('xattrs', async (tt) => {
  const f = join(work, 'xattr-file');
  fs.writeFileSync(f, 'x');
  const binName = Buffer.concat([Buffer.from('user.bin'), Buffer.from([0xff, 0x01])]);
  const binVal = Buffer.from([0, 1, 2, 0, 255]);
  const bigVal = randomBytes(3000);
  setXattr(f, 'user.a', Buffer.from('hello'));
  setXattr(Buffer.from(f), binName, binVal);
  setXattr(f, 'user.empty', Buffer.alloc(0));
  setXattr(f, 'user.big', bigVal);
  setXattr(f, 'user.a', Buffer.from('replaced'));

  const got = listXattrs(f).filter(([n]) => n.toString('latin1').startsWith('user.'));
  const norm = (l: Array<[Buffer, Buffer]>) =>
    l.map(([n, v]) => [n.toString('hex'), v.toString('hex')]).sort();
  tt.same(norm(got), norm([
    [Buffer.from('user.a'), Buffer.from('replaced')],
    [binName, binVal],
    [Buffer.from('user.empty'), Buffer.alloc(0)],
    [Buffer.from('user.big'), bigVal],
  ]), 'names (no trailing NUL) and binary values round-trip');
  for (const [n] of listXattrs(f)) tt.notOk(n.includes(0), 'no NUL in names');

  const plain = join(work, 'xattr-none');
  fs.writeFileSync(plain, '');
  tt.same(listXattrs(plain).filter(([n]) => n.toString().startsWith('user.')), [], 'no user xattrs');

  const link = join(work, 'xattr-link');
  fs.symlinkSync(f, link);
  const onLink = listXattrs(link).map(([n]) => n.toString('latin1'));
  tt.notOk(onLink.includes('user.a'), 'listXattrs does not follow symlinks');
  const e = tt.throws(() => setXattr(link, 'user.x', Buffer.from('1'))) as unknown as NativeError;
  tt.ok(['EPERM', 'ENOTSUP', 'EOPNOTSUPP'].includes(e.code), `user xattr on symlink refused (${e.code})`);
  tt.equal(e.syscall, 'lsetxattr');
  tt.equal(e.path, link);

  const missing = join(work, 'nope');
  tt.match(tt.throws(() => listXattrs(missing)), {
    code: 'ENOENT', errno: -2, syscall: 'llistxattr', path: missing,
    message: `llistxattr '${missing}': ENOENT: no such file or directory`,
  });
  tt.throws(() => listXattrs(Buffer.from('a\0b')), TypeError, 'NUL in path');
  tt.throws(() => setXattr(f, 'user.a', 'str' as unknown as Buffer), TypeError, 'value must be bytes');
});

t.test('mknod', async (tt) => {
  const fifo = join(work, 'fifo');
  mknod(fifo, S_IFIFO | 0o644, 0);
  tt.ok(fs.lstatSync(fifo).isFIFO(), 'FIFO');
  const sock = join(work, 'sock');
  mknod(sock, S_IFSOCK | 0o600, 0);
  tt.ok(fs.lstatSync(sock).isSocket(), 'socket');

  const nullRdev = fs.statSync('/dev/null').rdev;
  const chr = join(work, 'chr');
  try {
    mknod(chr, S_IFCHR | 0o600, nullRdev);
    const st = fs.lstatSync(chr);
    tt.ok(st.isCharacterDevice(), 'char device');
    tt.equal(st.rdev, nullRdev, 'rdev kept');
  } catch (err) {
    if ((err as NativeError).code !== 'EPERM') throw err;
    tt.comment('no CAP_MKNOD here; char device creation skipped');
  }
  tt.match(tt.throws(() => mknod(fifo, S_IFIFO | 0o644, 0)), { code: 'EEXIST', syscall: 'mknod', path: fifo });
  tt.throws(() => mknod(fifo, -1, 0), TypeError);
});

t.test('utimensNoFollow', async (tt) => {
  const f = join(work, 'times');
  fs.writeFileSync(f, 'x');
  utimensNoFollow(f, 5_000_000_000, 123_456_789, -1_234_567_890, 987_654_321);
  const st = fs.lstatSync(f, { bigint: true });
  tt.equal(st.atimeNs, 5_000_000_000_123_456_789n, 'atime beyond 2^32 s, ns precision');
  tt.equal(st.mtimeNs, -1_234_567_890n * 1_000_000_000n + 987_654_321n, 'negative mtime');

  const link = join(work, 'times-link');
  fs.symlinkSync(f, link);
  utimensNoFollow(link, 1_000_000_000, 1, 1_100_000_000, 999_999_999);
  const ls = fs.lstatSync(link, { bigint: true });
  tt.equal(ls.atimeNs, 1_000_000_000_000_000_001n, 'symlink atime');
  tt.equal(ls.mtimeNs, 1_100_000_000_999_999_999n, 'symlink mtime');
  const ts = fs.statSync(f, { bigint: true });
  tt.equal(ts.mtimeNs, st.mtimeNs, 'target untouched');

  tt.throws(() => utimensNoFollow(f, 0, 1_000_000_000, 0, 0), TypeError, 'nsec out of range');
  tt.throws(() => utimensNoFollow(f, 0.5, 0, 0, 0), TypeError, 'fractional seconds');
  tt.match(tt.throws(() => utimensNoFollow(join(work, 'none'), 0, 0, 0, 0)), { code: 'ENOENT', syscall: 'utimensat' });
});

t.test('scanDir', async (tt) => {
  const dir = join(work, 'scan');
  fs.mkdirSync(dir);
  const allBytes = Buffer.from(Array.from({ length: 255 }, (_, i) => i + 1).filter((b) => b !== 0x2f));
  const names: Buffer[] = [
    Buffer.from([0x66, 0xff, 0xfe, 0x80]),
    Buffer.from('new\nline'),
    Buffer.from('x'.repeat(255)),
    allBytes, // 254 bytes: every byte but NUL and '/'
    Buffer.from('ünïcødé ☃'),
    Buffer.from('.hidden'),
    Buffer.from('...'),
  ];
  const p = (n: Buffer | string) => Buffer.concat([Buffer.from(dir + '/'), Buffer.from(n)]);
  for (const n of names) fs.writeFileSync(p(n), n);
  fs.mkdirSync(p('sub'));
  fs.symlinkSync('dangling-target', p('lnk'));
  mknod(p('fifo'), S_IFIFO | 0o600, 0);
  fs.linkSync(p(names[0]!), p('hardlink'));
  const sparse = fs.openSync(p('sparse'), 'w');
  fs.ftruncateSync(sparse, 1 << 30);
  fs.closeSync(sparse);
  utimensNoFollow(p('sub'), 4_000_000_000, 999_999_999, -5, 7);
  utimensNoFollow(p('lnk'), 0, 0, 4_000_000_000, 999_999_999);
  const expected = [...names, ...['sub', 'lnk', 'fifo', 'hardlink', 'sparse'].map((s) => Buffer.from(s))];

  const buf = await scanDir(Buffer.from(dir));
  tt.ok(Buffer.isBuffer(buf), 'resolves to a Buffer');
  const entries = decodeScan(buf);
  const hex = (b: Buffer) => b.toString('hex');
  tt.same(entries.map((e) => hex(e.name)).sort(), expected.map(hex).sort(), 'all names, no . or ..');
  for (const e of entries) {
    const st = fs.lstatSync(p(e.name), { bigint: true });
    tt.same({
      mode: e.mode, uid: e.uid, gid: e.gid, nlink: e.nlink, ino: e.ino, size: e.size,
      blocks: e.blocks, rdev: e.rdev, dev: e.dev,
      atimeNs: e.atimeNs, mtimeNs: e.mtimeNs, ctimeNs: e.ctimeNs, errno: e.errno,
    }, {
      mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), nlink: Number(st.nlink),
      ino: st.ino, size: Number(st.size), blocks: Number(st.blocks), rdev: Number(st.rdev),
      dev: Number(st.dev), atimeNs: 0n, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, errno: 0,
    }, `lstat fields of name ${e.name.toString('hex').slice(0, 24)} (${e.name.length} bytes)`);
  }
  const byName = new Map(entries.map((e) => [e.name.toString('latin1'), e]));
  tt.equal(byName.get('sub')!.mode & S_IFMT, fs.constants.S_IFDIR, 'directory type');
  tt.equal(byName.get('lnk')!.mode & S_IFMT, fs.constants.S_IFLNK, 'symlink not followed');
  tt.equal(byName.get('hardlink')!.nlink, 2, 'nlink');
  tt.equal(byName.get('sparse')!.size, 1 << 30, 'size of a sparse file');
  tt.equal(byName.get('sub')!.mtimeNs, -5n * 1_000_000_000n + 7n, 'negative time decoded');
  tt.equal(byName.get('lnk')!.mtimeNs, 4_000_000_000_999_999_999n, 'time beyond 2^32 s decoded');
  tt.equal(byName.get('sub')!.atimeNs, 0n, 'atime left out (a read must not change a listing), though this one is beyond 2^32 s');

  tt.same(entries.map((e) => hex(e.name)), expected.map(hex).sort(), 'sorted by name (Buffer.compare order)');
  tt.same(decodeScan(await scanDir(join(dir, 'sub'))), [], 'empty dir');
  tt.equal((await scanDir(dir + '/')).length, buf.length, 'string path');
});

t.test('scanDir: many entries (buffer growth)', async (tt) => {
  const dir = join(work, 'many');
  fs.mkdirSync(dir);
  const n = 5000;
  for (let i = 0; i < n; i++) fs.writeFileSync(join(dir, `${String(i).padStart(6, '0')}-${'y'.repeat(200)}`), '');
  const [a, b] = await Promise.all([scanDir(dir), scanDir(dir)]);
  const entries = decodeScan(a);
  tt.equal(entries.length, n, 'all entries');
  tt.ok(a.length > 1024 * 1024, 'result larger than the initial buffer');
  tt.ok(entries.every((e) => e.errno === 0 && e.name.length === 207), 'names and stats intact');
  tt.equal(new Set(entries.map((e) => e.name.toString())).size, n, 'names unique');
  tt.same(b, a, 'concurrent scans agree');
});

t.test('scanDir: order is Buffer.compare order (prefixes first, bytes unsigned)', async (tt) => {
  const dir = join(work, 'order');
  fs.mkdirSync(dir);
  const names = ['a', 'ab', 'a\x01', 'b', 'A', 'abc', 'aa'].map((s) => Buffer.from(s, 'latin1'));
  names.push(Buffer.from([0xff]), Buffer.from([0x80, 0x01]), Buffer.from([0x61, 0xff]));
  for (const n of names) fs.writeFileSync(Buffer.concat([Buffer.from(dir + '/'), n]), '');
  const got = [...scanRecords(await scanDir(dir))].map((e) => e.name.toString('hex'));
  tt.same(got, [...names].sort(Buffer.compare).map((n) => n.toString('hex')));
});

t.test('scanDir errors', async (tt) => {
  const missing = join(work, 'does-not-exist');
  await tt.rejects(scanDir(missing), {
    code: 'ENOENT', errno: -2, syscall: 'scandir', path: missing,
    message: `scandir '${missing}': ENOENT: no such file or directory`,
  });
  const file = join(work, 'plainfile');
  fs.writeFileSync(file, '');
  await tt.rejects(scanDir(file), { code: 'ENOTDIR', errno: -20, syscall: 'scandir', path: file });
  await tt.rejects(scanDir(join(file, 'x')), { code: 'ENOTDIR' });
  const odd = Buffer.concat([Buffer.from(work + '/'), Buffer.from([0xff, 0x41])]);
  const e = await scanDir(odd).then(() => null, (err: NativeError) => err);
  tt.match(e, { code: 'ENOENT', path: `${work}/\ufffdA` }, 'non-UTF-8 path in error');
  await tt.rejects(scanDir(42 as unknown as string), TypeError, 'bad argument rejects');
  await tt.rejects(scanDir(''), TypeError, 'empty path rejects');
});

t.test('scanDirs: each listing as scanDir gives it, in order, errors in place', async (tt) => {
  const base = join(work, 'scan-many');
  const dirs = ['a', 'b', 'empty', 'c'].map((n) => join(base, n));
  for (const d of dirs) fs.mkdirSync(d, { recursive: true });
  for (let i = 0; i < 50; i++) fs.writeFileSync(join(dirs[i % 2]!, `f${i}`), String(i));
  fs.mkdirSync(join(dirs[3]!, 'sub'));
  const missing = join(base, 'missing');
  const file = join(dirs[0]!, 'f0');
  const got = await scanDirs([dirs[0]!, missing, dirs[1]!, dirs[2]!, file, Buffer.from(dirs[3]!)]);
  tt.equal(got.length, 6);
  for (const [i, d] of [[0, dirs[0]!], [2, dirs[1]!], [3, dirs[2]!], [5, dirs[3]!]] as const) {
    tt.same(got[i], await scanDir(d), `${d}: as scanDir lists it`);
  }
  tt.equal(decodeScan(got[0] as Buffer).length, 25);
  tt.same(decodeScan(got[3] as Buffer), [], 'empty directory');
  tt.match(got[1], { code: 'ENOENT', syscall: 'scandir', path: missing }, 'a missing directory: its error, in place');
  tt.match(got[4], { code: 'ENOTDIR', path: file });
  tt.same(await scanDirs([]), [], 'nothing to list');
  // A byte budget: listing stops once it is spent (the directory that spends it is whole).
  const budgeted = await scanDirs([dirs[0]!, dirs[1]!, dirs[2]!], 1);
  tt.same(budgeted[0], got[0], 'the first listing, whole, though it is over the budget');
  tt.same(budgeted.slice(1), [null, null], 'the others not listed');
  tt.same(await scanDirs([dirs[2]!, dirs[0]!, dirs[1]!], (got[0] as Buffer).length), [got[3], got[0], null], 'listed until the budget is reached');
  await tt.rejects(scanDirs([dirs[0]!], -1), TypeError, 'a negative budget rejects');
  await tt.rejects(scanDirs(['ok', 42 as unknown as string]), TypeError, 'bad argument rejects');
});

t.test('setMmapThreshold: glibc takes it; out-of-range values are refused', async (t) => {
  t.equal(setMmapThreshold(1024 * 1024), true, 'set (this is glibc)');
  t.throws(() => setMmapThreshold(0));
  t.throws(() => setMmapThreshold(64 * 1024 * 1024));
});

t.test('setTrimThreshold: glibc takes it; out-of-range values are refused', async (t) => {
  t.equal(setTrimThreshold(64 * 1024 * 1024), true, 'set (this is glibc)');
  t.equal(setTrimThreshold(128 * 1024), true, 'and back to glibc\'s default');
  t.throws(() => setTrimThreshold(0));
  t.throws(() => setTrimThreshold(2 ** 31));
});

t.test('trimMalloc: the free pages in the middle of the C heap go back to the kernel', async (tt) => {
  tt.type(trimMalloc(), 'boolean', 'callable in this process');
  // In a process of its own, so that nothing else allocates meanwhile: 64 MiB of buffers
  // of 64 KiB (under glibc's mmap threshold: from the heap), then one more that stays, so
  // freeing the others leaves a free stretch below it that free() cannot return itself.
  const url = new URL('../lib/platform/native.js', import.meta.url).href;
  const script = `
    import { readFileSync } from 'node:fs';
    const { trimMalloc } = await import(${JSON.stringify(url)});
    const anon = () => Number(/RssAnon:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
    let held = Array.from({ length: 1024 }, () => Buffer.alloc(65536, 1));
    const kept = Buffer.alloc(65536, 2);
    held = undefined;
    for (let i = 0; i < 20 && process.memoryUsage().arrayBuffers > 32 << 20; i++) {
      globalThis.gc();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const before = anon();
    const released = trimMalloc();
    console.log(JSON.stringify({ released, before, after: anon(), buffers: process.memoryUsage().arrayBuffers, kept: kept[0] }));
  `;
  const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: undefined, MALLOC_TRIM_THRESHOLD_: undefined },
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  tt.equal(code, 0, 'the child ran');
  const r = JSON.parse(out) as { released: boolean; before: number; after: number; buffers: number };
  tt.ok(r.buffers < 32 << 20, `the buffers were freed (${r.buffers} bytes of ArrayBuffers left)`);
  tt.equal(r.released, true, 'malloc_trim released memory');
  tt.ok(r.before - r.after >= 32 << 20, `anonymous memory fell by at least 32 MiB (${r.before} -> ${r.after} bytes)`);
});

t.test('preadCached: cached bytes only, never wrong ones', async (tt) => {
  const file = join(work, 'pread-cached');
  const data = randomBytes(3 * 65536 + 123);
  fs.writeFileSync(file, data); // just written: in the page cache
  const fd = fs.openSync(file, 'r');
  tt.teardown(() => fs.closeSync(fd));
  const buf = Buffer.alloc(70000);
  const n = preadCached(fd, buf, 1000);
  // -1 only where the kernel cannot read without waiting (or lacks RWF_NOWAIT).
  tt.ok(n === -1 || n === buf.length, `a cached range reads whole or not at all (${n})`);
  if (n === buf.length) tt.ok(buf.equals(data.subarray(1000, 71000)), 'the bytes are the file\'s');
  const tail = Buffer.alloc(500);
  const m = preadCached(fd, tail, data.length - 123);
  tt.ok(m === -1 || m === 123, `short at the end of the file (${m})`);
  if (m === 123) tt.ok(tail.subarray(0, 123).equals(data.subarray(data.length - 123)), 'the tail bytes');
  tt.equal(preadCached(fd, Buffer.alloc(10), data.length + 10), n === -1 ? -1 : 0, 'past the end: nothing');
  tt.throws(() => preadCached(123456, Buffer.alloc(10), 0), { code: 'EBADF' }, 'a bad descriptor is an error, not "not cached"');
  tt.throws(() => preadCached(fd, 'x' as unknown as Buffer, 0), { code: 'ERR_INVALID_ARG_TYPE' });
});

t.test('dropCachedPages: a synced file leaves the page cache', async (tt) => {
  const file = join(work, 'drop-cached');
  fs.writeFileSync(file, randomBytes(1024 * 1024));
  const fd = fs.openSync(file, 'r+');
  tt.teardown(() => fs.closeSync(fd));
  fs.fsyncSync(fd);
  const buf = Buffer.alloc(65536);
  if (onTmpfs(file)) {
    tt.pass('a synced file leaves the page cache', { skip: 'tmpfs: its pages are the file itself' });
  } else {
    tt.equal(preadCached(fd, buf, 0), buf.length, 'just written: cached');
    tt.equal(dropCachedPages(fd), true, 'advice taken');
    // The end first: a read that finds nothing starts the kernel's read-ahead from there on.
    tt.equal(preadCached(fd, buf, 512 * 1024), -1, 'dropped: reading would wait for the disk');
    tt.equal(preadCached(fd, buf, 0), -1, 'all of it');
    fs.readSync(fd, buf, 0, buf.length, 0);
    tt.equal(preadCached(fd, buf, 0), buf.length, 'read again: cached again');
  }
  tt.throws(() => dropCachedPages(123456), { code: 'EBADF' }, 'a bad descriptor is an error');
});

t.test('newFile: appears whole under its name, or not at all', async (tt) => {
  const dir = join(work, 'newfile');
  fs.mkdirSync(dir);
  const dirFd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  tt.teardown(() => fs.closeSync(dirFd));
  const viaFd = `/proc/self/fd/${dirFd}`; // as restore passes it
  const a = randomBytes(70000);
  const b = randomBytes(5000);
  const size = 1024 * 1024 + 17; // a hole between the parts, and one at the end
  await newFile(viaFd, 'sparse', {
    parts: [a, b], offsets: [0, 512 * 1024], size, uid: 1234, gid: 5678, mode: 0o4751,
    mtimeSec: 1_700_000_000, mtimeNsec: 123_456_789, chown: process.getuid?.() === 0,
  });
  const path = join(dir, 'sparse');
  const st = fs.statSync(path, { bigint: true });
  tt.equal(Number(st.size), size, 'size');
  tt.equal(Number(st.mode & 0o7777n), 0o4751, 'mode, setuid kept (set after the owner)');
  if (process.getuid?.() === 0) tt.same([Number(st.uid), Number(st.gid)], [1234, 5678], 'owner');
  tt.equal(st.mtimeNs, 1_700_000_000_123_456_789n, 'mtime to the nanosecond');
  tt.equal(st.atimeNs, st.mtimeNs, 'atime = mtime');
  const expected = Buffer.alloc(size);
  a.copy(expected, 0);
  b.copy(expected, 512 * 1024);
  tt.ok(fs.readFileSync(path).equals(expected), 'bytes at their offsets, zeros between');
  tt.ok(Number(st.blocks) * 512 < 200 * 1024, `holes stay holes (${Number(st.blocks) * 512} bytes allocated)`);
  tt.equal(fs.statSync(path).nlink, 1, 'one name');

  await tt.rejects(newFile(viaFd, 'sparse', { parts: [b], offsets: [0], size: b.length, uid: 0, gid: 0, mode: 0o644, mtimeSec: 0, mtimeNsec: 0, chown: false }),
    { code: 'EEXIST' }, 'an existing name is never replaced');
  tt.ok(fs.readFileSync(path).equals(expected), 'and keeps its bytes');
  fs.symlinkSync('sparse', join(dir, 'link'));
  await tt.rejects(newFile(viaFd, 'link', { parts: [b], offsets: [0], size: b.length, uid: 0, gid: 0, mode: 0o644, mtimeSec: 0, mtimeNsec: 0, chown: false }),
    { code: 'EEXIST' }, 'nor written through a symlink of that name');
  tt.ok(fs.readFileSync(path).equals(expected), 'the symlink\'s target is untouched');
  tt.throws(() => newFile(viaFd, 'a/b', { parts: [], offsets: [], size: 0, uid: 0, gid: 0, mode: 0o644, mtimeSec: 0, mtimeNsec: 0, chown: false }),
    { code: 'ERR_INVALID_ARG_VALUE' }, 'a name with a slash is refused');
  await tt.rejects(newFile(join(dir, 'missing'), 'x', { parts: [], offsets: [], size: 0, uid: 0, gid: 0, mode: 0o644, mtimeSec: 0, mtimeNsec: 0, chown: false }),
    { code: 'ENOENT' }, 'a missing directory is an error');
  tt.same(fs.readdirSync(dir).sort(), ['link', 'sparse'], 'failures left nothing behind');
});

t.test('zstdDecompress: on the thread pool, several at once, damage rejected', async (tt) => {
  const { compress } = await import('zstd-napi');
  const inputs = [0, 1, 1000, 300_000, 2 * 1024 * 1024].map((n, i) => {
    const b = Buffer.alloc(n);
    for (let k = 0; k < n; k++) b[k] = (k * (i + 7)) % 251 ^ (k >> 9); // compressible, not trivial
    return b;
  });
  const frames = inputs.map((b) => compress(b));
  const outs = inputs.map((b) => Buffer.alloc(b.length));
  const written = await Promise.all(frames.map((f, i) => zstdDecompress(f, outs[i]!)));
  inputs.forEach((b, i) => {
    tt.equal(written[i], b.length, `${b.length} bytes written`);
    tt.ok(outs[i]!.equals(b), `${b.length} bytes: the input again`);
  });
  const big = frames[4]!;
  await tt.rejects(zstdDecompress(big, Buffer.alloc(inputs[4]!.length - 1)), /Destination buffer is too small/, 'an output that is too small is an error, not an overrun');
  const damaged = Buffer.from(big);
  damaged[Math.floor(damaged.length / 2)] ^= 0xff;
  damaged[Math.floor(damaged.length / 3)] ^= 0x55;
  const out = Buffer.alloc(inputs[4]!.length);
  const r = await zstdDecompress(damaged, out).then(() => 'resolved', (e: Error) => e.message);
  // zstd's own checksum is off in snapfs frames (the keyed id verifies the bytes), so a
  // damaged frame may decode to wrong bytes: it must then at least not claim success silently
  // with the right bytes, and never crash.
  tt.ok(r !== 'resolved' || !out.equals(inputs[4]!), `a damaged frame fails or decodes to other bytes (${r})`);
  await tt.rejects(zstdDecompress(Buffer.from('not a zstd frame at all'), Buffer.alloc(10)), /Unknown frame descriptor|unknown|Corrupted/i, 'garbage is rejected');
  tt.throws(() => zstdDecompress('x' as unknown as Buffer, out), { code: 'ERR_INVALID_ARG_TYPE' });
});
