// Tests of the test helpers: the fidelity tree must contain what it promises,
// compareTrees must see a faithful copy as identical and must notice each
// kind of damage, and the process helpers must report failures usefully.

import t from 'tap';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { listXattrs, setXattr, utimensNoFollow } from '../lib/platform/native.js';
import { cliPath, runProcess, runSnapfs, spawnSnapfs, tmpDir } from './helpers/cli.js';
import { joinRaw, showPath } from './helpers/raw-path.js';
import { assertTreesEqual, compareTrees, type CompareAspect } from './helpers/tree-compare.js';
import { generateFidelityTree, generateSmallTree, isRoot, makedev, mutateFiles } from './helpers/tree-gen.js';

const MiB = 1024 * 1024;
const chunk = { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 };
const NS = 1_000_000_000n;

/** cp -a keeps modes, owners, ns timestamps, xattrs, hard links and special files. */
async function copyTree(from: string, to: string): Promise<void> {
  await runProcess('cp', ['-a', '--sparse=always', from, to]);
}

/** Sets a path's timestamps back to those in `st`, undoing the side effect of an edit. */
function restoreTimes(path: string | Buffer, st: { atimeNs: bigint; mtimeNs: bigint }): void {
  utimensNoFollow(path, Number(st.atimeNs / NS), Number(st.atimeNs % NS), Number(st.mtimeNs / NS), Number(st.mtimeNs % NS));
}

/** Runs an edit inside `dir` without changing the directory's own mtime. */
async function keepingDirTimes(dir: string, edit: () => Promise<void>): Promise<void> {
  const st = await fsp.lstat(dir, { bigint: true });
  await edit();
  restoreTimes(dir, st);
}

t.test('fidelity tree', async (t) => {
  const base = await tmpDir(t, 'snapfs-helpers');
  const src = join(base, 'src');
  await generateFidelityTree(src, { bigFileBytes: 8 * MiB + 5, chunk });

  t.test('contains what it promises', async (t) => {
    const st = (rel: string | Buffer) => fsp.lstat(joinRaw(src, rel), { bigint: true });
    t.equal((await st('sizes/min-minus-1')).size, BigInt(chunk.min - 1));
    t.equal((await st('sizes/max-plus-1')).size, BigInt(chunk.max + 1));
    t.equal((await st('big/random.bin')).size, BigInt(8 * MiB + 5));
    const holes = await st('sparse/holes');
    t.equal(holes.size, BigInt(128 * 1024 + 20 * MiB));
    t.ok(holes.blocks * 512n <= 256n * 1024n, 'sparse/holes allocates only its data');
    t.equal((await st('sparse/all-hole')).blocks, 0n, 'sparse/all-hole allocates nothing');
    t.equal((await st('hardlinks/a/three-1')).nlink, 3n);
    t.equal((await st('hardlinks/b/three-3')).ino, (await st('hardlinks/a/three-1')).ino);
    t.ok((await st('special/fifo')).isFIFO());
    if (isRoot) {
      const dev = await st('special/null');
      t.ok(dev.isCharacterDevice());
      t.equal(dev.rdev, BigInt(makedev(1, 3)));
      const suid = await st('modes/04755-setuid');
      t.equal(suid.mode & 0o7777n, 0o4755n, 'setuid survives chown');
      t.equal(suid.uid, 1000n);
      t.equal((await st('owners/link-1000-1000')).uid, 1000n, 'symlink owner set with lchown');
    }
    t.equal((await st('modes/01777-sticky-dir')).mode & 0o7777n, 0o1777n);
    t.equal((await st('times/ns-max')).mtimeNs % NS, 999_999_999n);
    t.equal((await st('times/after-2038')).mtimeNs / NS, BigInt(2 ** 31 + 12345));
    t.not((await st('times/symlink')).mtimeNs % NS, 0n, 'symlink has its own ns mtime');
    t.ok((await st(Buffer.from('names/f\xff\xfe', 'latin1'))).isFile(), 'non-UTF-8 name');
    const names = await fsp.readdir(join(src, 'names'), { encoding: 'buffer' });
    t.ok(names.every((n) => n.length <= 255));
    const seen = new Set(names.filter((n) => n.toString('latin1').startsWith('bytes-')).flatMap((n) => [...n.subarray(8)]));
    t.equal(seen.size, 254, 'every byte but NUL and "/" appears in some name');
    const xattrs = listXattrs(joinRaw(src, 'xattrs/file'));
    t.same(xattrs.map(([n]) => n.toString()).sort(), ['user.binary', 'user.café', 'user.empty', 'user.large', 'user.text']);
    t.equal(xattrs.find(([n]) => n.toString() === 'user.empty')![1].length, 0);
    // Directory mtimes were applied after their contents were created.
    t.equal((await st('nested/a/b/c/d/e')).mtimeNs % NS !== 0n, true);
  });

  t.test('is deterministic', async (t) => {
    const again = join(base, 'again');
    await generateFidelityTree(again, { bigFileBytes: 8 * MiB + 5, chunk });
    await assertTreesEqual(t, src, again);
    await fsp.rm(again, { recursive: true, force: true });
  });

  t.test('a cp -a copy compares identical', async (t) => {
    const copy = join(base, 'copy');
    await copyTree(src, copy);
    await assertTreesEqual(t, src, copy);
    await fsp.rm(copy, { recursive: true, force: true });
  });

  interface Damage {
    name: string;
    /** Damages the copy; it must not touch anything but what the case is about. */
    damage: (copy: string) => Promise<void>;
    /** Each pattern must match one reported difference, and nothing else may be reported. */
    expect: RegExp[];
    /** Ignoring this aspect must hide the damage entirely. */
    hiddenBy?: CompareAspect;
  }

  const cases: Damage[] = [
    {
      name: 'one byte changed in the middle of a big file',
      damage: async (c) => {
        const p = join(c, 'big/random.bin');
        const st = await fsp.lstat(p, { bigint: true });
        const fh = await fsp.open(p, 'r+');
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, 5 * MiB + 3);
        await fh.write(Buffer.from([b[0]! ^ 1]), 0, 1, 5 * MiB + 3);
        await fh.close();
        restoreTimes(p, st);
      },
      expect: [/^"big\/random.bin": content differs from byte offset 5242883$/],
    },
    {
      name: 'mode changed',
      damage: (c) => fsp.chmod(join(c, 'modes/0600'), 0o640),
      expect: [/^"modes\/0600": mode expected 0600, actual 0640$/],
      hiddenBy: 'mode',
    },
    {
      name: 'setuid bit lost',
      damage: (c) => fsp.chmod(join(c, 'modes/04755-setuid'), 0o755),
      expect: [/mode expected 4755, actual 0755/],
      hiddenBy: 'mode',
    },
    {
      name: 'mtime off by one nanosecond',
      damage: async (c) => utimensNoFollow(join(c, 'times/ns-zero'), 1, 0, 1_600_000_000, 1),
      expect: [/^"times\/ns-zero": mtime expected 1600000000.000000000, actual 1600000000.000000001$/],
      hiddenBy: 'mtime',
    },
    {
      name: 'symlink mtime changed',
      damage: async (c) => utimensNoFollow(join(c, 'times/symlink'), 1, 0, 2, 0),
      expect: [/^"times\/symlink": mtime expected \d+\.\d{9}, actual 2\.000000000$/],
      hiddenBy: 'mtime',
    },
    {
      name: 'directory mtime changed',
      damage: async (c) => utimensNoFollow(join(c, 'nested/a'), 1, 0, 2, 0),
      expect: [/^"nested\/a": mtime/],
      hiddenBy: 'dirMtime',
    },
    {
      name: 'file removed',
      damage: (c) => keepingDirTimes(join(c, 'text'), () => fsp.rm(join(c, 'text/lorem.txt'))),
      expect: [/^"text\/lorem.txt": missing in actual \(file\)$/],
    },
    {
      name: 'directory removed (reported once, not per entry)',
      damage: (c) => keepingDirTimes(join(c, 'nested'), () => fsp.rm(join(c, 'nested/a'), { recursive: true })),
      expect: [/^"nested\/a": missing in actual \(directory containing 7 entries\)$/],
    },
    {
      name: 'file added, changing its directory mtime',
      damage: (c) => fsp.writeFile(join(c, 'empty/new'), 'new'),
      expect: [/^"empty\/new": unexpected in actual \(file\)$/, /^"empty": mtime/],
    },
    {
      name: 'one xattr removed',
      // No removexattr in the addon: recreate the file without xattrs, then put back all but one.
      damage: (c) => keepingDirTimes(join(c, 'xattrs'), async () => {
        const p = join(c, 'xattrs/file');
        await fsp.rm(p);
        await runProcess('cp', ['--preserve=mode,ownership,timestamps', join(src, 'xattrs/file'), p]);
        for (const [n, v] of listXattrs(join(src, 'xattrs/file'))) if (n.toString() !== 'user.text') setXattr(p, n, v);
      }),
      expect: [/^"xattrs\/file": xattr "user.text" missing in actual$/],
      hiddenBy: 'xattrs',
    },
    {
      name: 'empty xattr value changed',
      damage: async (c) => setXattr(join(c, 'xattrs/dir'), Buffer.from('user.empty'), Buffer.from('x')),
      expect: [/^"xattrs\/dir": xattr "user.empty" expected "", actual "x"$/],
      hiddenBy: 'xattrs',
    },
    {
      name: 'hard link broken',
      damage: (c) => keepingDirTimes(join(c, 'hardlinks/a'), async () => {
        const p = join(c, 'hardlinks/a/three-2');
        await runProcess('cp', ['--preserve=all', p, p + '.tmp']);
        await fsp.rename(p + '.tmp', p);
      }),
      expect: [/^hard links differ: "hardlinks\/a\/three-1" is linked with \{"hardlinks\/a\/three-1", "hardlinks\/a\/three-2", "hardlinks\/b\/three-3"\} in expected but \{"hardlinks\/a\/three-1", "hardlinks\/b\/three-3"\} in actual$/],
      hiddenBy: 'hardlinks',
    },
    {
      name: 'identical files hard-linked together',
      damage: (c) => keepingDirTimes(join(c, 'dups'), async () => {
        await fsp.rm(join(c, 'dups/copy-b'));
        await fsp.link(join(c, 'dups/copy-a'), join(c, 'dups/copy-b'));
      }),
      // The link shares copy-a's inode, hence its mtime too.
      expect: [/^hard links differ: "dups\/copy-a" is linked with \{"dups\/copy-a"\} in expected but \{"dups\/copy-a", "dups\/copy-b"\} in actual$/, /^"dups\/copy-b": mtime/],
    },
    {
      name: 'holes filled in',
      damage: (c) => keepingDirTimes(join(c, 'sparse'), async () => {
        const p = join(c, 'sparse/holes');
        await runProcess('cp', ['--preserve=all', '--sparse=never', p, p + '.tmp']);
        await fsp.rename(p + '.tmp', p);
      }),
      expect: [/^"sparse\/holes": allocates \d+ bytes, expected at most \d+ \+ 65536 slack/],
      hiddenBy: 'sparse',
    },
    {
      name: 'symlink target changed',
      damage: (c) => keepingDirTimes(join(c, 'links'), async () => {
        const p = join(c, 'links/odd-target');
        const st = await fsp.lstat(p, { bigint: true });
        await fsp.rm(p);
        await fsp.symlink(Buffer.from([0x2e, 0x2e, 0x2f, 0xff, 0x0a, 0x81]), p);
        restoreTimes(p, st);
      }),
      expect: [/^"links\/odd-target": symlink target expected "..\/\\xff\\x0a\\x80", actual "..\/\\xff\\x0a\\x81"$/],
    },
    {
      name: 'owner changed',
      damage: (c) => fsp.lchown(join(c, 'owners/1234-5678'), 1234, 0),
      expect: [/^"owners\/1234-5678": gid expected 5678, actual 0$/],
      hiddenBy: 'gid',
    },
    {
      name: 'fifo replaced by a regular file',
      damage: (c) => keepingDirTimes(join(c, 'special'), async () => {
        const p = join(c, 'special/fifo');
        const st = await fsp.lstat(p, { bigint: true });
        await fsp.rm(p);
        await fsp.writeFile(p, '');
        restoreTimes(p, st);
      }),
      expect: [/^"special\/fifo": type expected fifo, actual file$/],
    },
    {
      name: 'content change in a non-UTF-8 name is shown escaped',
      damage: async (c) => {
        const p = joinRaw(c, Buffer.from('names/f\xff\xfe', 'latin1'));
        const st = await fsp.lstat(p, { bigint: true });
        await fsp.writeFile(p, 'odd name 9\n'); // same length as 'odd name 0\n'
        restoreTimes(p, st);
      },
      expect: [/^"names\/f\\xff\\xfe": content differs from byte offset 9$/],
    },
  ];

  if (!isRoot) cases.splice(cases.findIndex((c) => c.name === 'owner changed'), 1);

  for (const [i, c] of cases.entries()) {
    t.test(`reports: ${c.name}`, async (t) => {
      const copy = join(base, `damaged-${i}`);
      await copyTree(src, copy);
      await c.damage(copy);
      const diffs = await compareTrees(src, copy);
      t.equal(diffs.length, c.expect.length, 'number of differences: ' + JSON.stringify(diffs));
      for (const re of c.expect) t.ok(diffs.some((d) => re.test(d)), `reported ${re}`);
      if (c.hiddenBy) t.same(await compareTrees(src, copy, { ignore: [c.hiddenBy] }), [], `hidden by ignore ${c.hiddenBy}`);
      await fsp.rm(copy, { recursive: true, force: true });
    });
  }
});

t.test('small tree and mutateFiles', async (t) => {
  const base = await tmpDir(t, 'snapfs-small');
  const a = join(base, 'a');
  const files = await generateSmallTree(a, { files: 120, dirs: 9, seed: 1 });
  t.equal(files.length, 120);
  t.ok(existsSync(join(a, files[119]!)));
  t.ok(files.some((f) => f.split('/').length > 3), 'directories are nested');

  const b = join(base, 'b');
  await generateSmallTree(b, { files: 120, dirs: 9, seed: 1 });
  await assertTreesEqual(t, a, b, undefined, 'same seed, same tree');

  const other = join(base, 'other');
  await generateSmallTree(other, { files: 120, dirs: 9, seed: 2 });
  t.not((await compareTrees(a, other)).length, 0, 'different seed, different content');

  const picked = [files[3]!, files[50]!, files[51]!, files[100]!];
  await mutateFiles(b, picked, 7);
  const diffs = await compareTrees(a, b);
  for (const f of picked) {
    const mine = diffs.filter((d) => d.startsWith(showPath(f) + ':'));
    t.ok(mine.some((d) => /content differs|size expected/.test(d)), `${f}: content change reported`);
    t.ok(mine.some((d) => /mtime expected/.test(d)), `${f}: mtime bumped`);
  }
  t.ok(diffs.every((d) => picked.some((f) => d.startsWith(showPath(f) + ':'))), 'nothing else changed: ' + JSON.stringify(diffs));
  const before = await fsp.lstat(join(a, picked[0]!), { bigint: true });
  const after = await fsp.lstat(join(b, picked[0]!), { bigint: true });
  t.equal(after.mtimeNs - before.mtimeNs, 1_000_000_001n);
});

t.test('runProcess', async (t) => {
  const node = process.execPath;
  const r = await runProcess(node, ['-e', 'process.stdin.pipe(process.stdout); console.error("to stderr")'], { input: 'hello' });
  t.match(r, { code: 0, signal: null, stdout: 'hello', stderr: 'to stderr\n' });
  t.equal(r.json, undefined, 'no --json, no parsing');

  const j = await runProcess(node, ['-e', 'console.log(JSON.stringify({ ok: 1 }))', '--', '--json']);
  t.same(j.json, { ok: 1 });
  const bad = await runProcess(node, ['-e', 'console.log("not json")', '--', '--json']);
  t.equal(bad.json, undefined, 'unparseable --json output leaves json undefined');

  const env = await runProcess(node, ['-e', 'console.log(process.env.SNAPFS_TEST_VAR)'], { env: { SNAPFS_TEST_VAR: 'v' } });
  t.equal(env.stdout, 'v\n');

  const failing = ['-e', 'console.error("boom"); process.exit(3)'];
  await t.rejects(runProcess(node, failing), /exited with code 3[\s\S]*boom/);
  t.match(await runProcess(node, failing, { allowFail: true }), { code: 3, stderr: 'boom\n' });
  t.match(await runProcess(node, ['-e', 'process.kill(process.pid, "SIGKILL")'], { allowFail: true }), { code: -1, signal: 'SIGKILL' });
  await t.rejects(runProcess(node, ['-e', 'setTimeout(() => {}, 60000)'], { timeoutMs: 200, allowFail: true }), /timed out after 200 ms/);
  await t.rejects(runProcess('/nonexistent/program', []), /cannot run/);
});

t.test('cliPath points into this project', async (t) => {
  const root = join(cliPath(), '..', '..', '..');
  t.equal(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).name, 'snapfs');
  t.match(cliPath(), /\/dist\/cli\/main\.js$/);
});

t.test('runSnapfs and spawnSnapfs run the compiled CLI', { skip: !existsSync(cliPath()) && 'CLI not built yet' }, async (t) => {
  const r = await runSnapfs(['--help']);
  t.ok(r.stdout.length + r.stderr.length > 0, 'prints help');
  const child = spawnSnapfs(['--help']);
  const code = await new Promise((resolve) => child.on('close', resolve));
  t.equal(code, 0);
  t.equal(child.output().stdout + child.output().stderr, r.stdout + r.stderr);
});

t.test('tmpDir is removed at teardown', async (t) => {
  let dir = '';
  await t.test('uses a tmpDir', async (t) => {
    dir = await tmpDir(t, 'snapfs-tmpdir-check');
    await fsp.writeFile(join(dir, 'f'), 'x');
    t.ok(existsSync(dir));
  });
  t.notOk(existsSync(dir), 'removed after the subtest ended');
});
