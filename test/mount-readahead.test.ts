// Reading ahead across files (lib/fuse/lowlevel.ts, native/src/fuse_fetch.c,
// native/src/fuse_content.c, native/src/fuse_push.c): once two files of a directory were
// read in a row, the binding is told where the chunks of the files after them are stored,
// assembles and verifies each file on threads of its own, pushes it into the kernel's page
// cache and answers the reads that still come itself. Those answers must be the file's
// bytes whatever the reads look like: small direct reads at any offset, reads past the end,
// more files than the binding's store holds (the oldest go; their reads reach JS again), and
// files whose stored bytes are damaged (never served: EIO from JS).
// The first test looks at the store alone (pushing off); the second at the pages pushed.
import t from 'tap';
import { promises as fs } from 'node:fs';
import crypto from 'node:crypto';
import path from 'node:path';
import { runProcess } from './helpers/cli.js';
import { fuseAvailable, mountBackedUp, readAheadSettled, serverMemory } from './helpers/mount.js';
import { flipStoredByte } from './helpers/damage.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const ahead = async (m: Parameters<typeof serverMemory>[0]): Promise<number> => (await serverMemory(m)).requests['READ of files read ahead'] ?? 0;
const md5 = (b: Buffer): string => crypto.createHash('md5').update(b).digest('hex');
const tarSum = async (d: string): Promise<string> => (await runProcess('sh', ['-c', 'tar -C "$1" --sort=name -cf - . | md5sum', 'sh', d])).stdout;

t.test('files read ahead answer every read with the bytes of the file', { skip }, async (t) => {
  // A few small files of odd sizes, then more than the binding's 4 MiB store holds.
  const sizes = [1, 4095, 4096, 4097, 65_537, 131_072, 100_000, 12_345];
  const name = (i: number): string => `m${String(i).padStart(3, '0')}`;
  let manyBytes = 0;
  const { src, last, m } = await mountBackedUp(t, 'ra', async (src) => {
    for (const d of ['few', 'many', 'evict']) await fs.mkdir(path.join(src, d));
    for (const [i, size] of sizes.entries()) await fs.writeFile(path.join(src, 'few', `f${i}`), crypto.randomBytes(size));
    for (let i = 0; i < 120; i++) {
      manyBytes += 60_000 + i * 500;
      await fs.writeFile(path.join(src, 'many', name(i)), crypto.randomBytes(60_000 + i * 500));
      await fs.writeFile(path.join(src, 'evict', name(i)), crypto.randomBytes(60_000 + i * 500));
    }
  }, { SNAPFS_FUSE_NO_PUSH: '1' });
  const few = path.join(src, 'few');
  const many = path.join(src, 'many');
  const evict = path.join(src, 'evict');
  const dir = path.join(last, 'few');

  // Two files in a row: the rest of the directory is read ahead.
  for (const i of [0, 1]) t.equal(md5(await fs.readFile(path.join(dir, `f${i}`))), md5(await fs.readFile(path.join(few, `f${i}`))), `f${i} reads back`);
  await readAheadSettled(m);
  const before = await ahead(m);

  // Direct 4 KiB reads (no page cache: each one a request), the first ones from the middle
  // and past the end, then the whole file in order.
  const f5 = path.join(dir, 'f5'); // 131,072 bytes: 32 blocks
  const original = await fs.readFile(path.join(few, 'f5'));
  const block = async (skipBlocks: number): Promise<string> =>
    (await runProcess('sh', ['-c', `dd if="$1" iflag=direct bs=4096 skip=${skipBlocks} count=1 status=none | md5sum`, 'sh', f5])).stdout.split(' ')[0]!;
  t.equal(await block(7), md5(original.subarray(7 * 4096, 8 * 4096)), 'a direct read in the middle');
  t.equal(await block(40), md5(Buffer.alloc(0)), 'a direct read past the end: no bytes (the kernel answers it from the size)');
  const whole = await runProcess('sh', ['-c', 'dd if="$1" iflag=direct bs=4096 status=none | md5sum', 'sh', f5]);
  t.equal(whole.stdout.split(' ')[0], md5(original), 'f5 read in direct 4 KiB blocks');
  const served = (await ahead(m)) - before;
  t.ok(served >= 3, `the binding answered those reads from the file read ahead (${served})`);

  // Every other file, bytes compared.
  for (const [i] of sizes.entries()) {
    t.equal(md5(await fs.readFile(path.join(dir, `f${i}`))), md5(await fs.readFile(path.join(few, `f${i}`))), `f${i} reads back`);
  }

  // Three read-aheads of ~2 MiB each, nothing of them read yet: the store (4 MiB) lets the
  // oldest go. Their reads then reach JS again, with the same bytes.
  const evictDir = path.join(last, 'evict');
  for (const pair of [[0, 1], [40, 41], [80, 81]]) {
    for (const i of pair) await fs.readFile(path.join(evictDir, name(i)));
    await readAheadSettled(m);
  }
  const beforeEvicted = await ahead(m);
  for (let i = 2; i <= 10; i++) t.equal(md5(await fs.readFile(path.join(evictDir, name(i)))), md5(await fs.readFile(path.join(evict, name(i)))), `${name(i)} reads back`);
  const fromStore = (await ahead(m)) - beforeEvicted;
  t.ok(fromStore < 9, `files read ahead first were let go when the store filled (${fromStore} of 9 reads from it)`);

  // More than the store holds: tar reads them in order; the stream equals the source's.
  const beforeMany = await ahead(m);
  t.equal(await tarSum(path.join(last, 'many')), await tarSum(many), `tar of 120 files (${(manyBytes / 1e6).toFixed(1)} MB) through the mount is byte for byte the source's`);
  const servedMany = (await ahead(m)) - beforeMany;
  t.ok(servedMany >= 60, `reads of most of those files were answered from files read ahead (${servedMany} reads for 120 files)`);
  await m.stop();
});

t.test('files read ahead are pushed into the page cache: their reads are not even sent', { skip }, async (t) => {
  const files = 300;
  const name = (i: number): string => `${i}.`; // Cyrus spool names
  const { src, last, m } = await mountBackedUp(t, 'push', async (src) => {
    // A file sorted before the spool: its lookup tells the server a walk stats names, so the
    // spool's listing hands the kernel every file's node (READDIRPLUS) before tar reads one.
    // A node the kernel does not know yet cannot be pushed (refused; its reads come as before).
    await fs.writeFile(path.join(src, 'a-file'), 'first\n');
    await fs.mkdir(path.join(src, 'spool'));
    for (let i = 0; i < files; i++) await fs.writeFile(path.join(src, 'spool', name(i)), crypto.randomBytes(1 + ((i * 7919) % 90_000)));
  });
  const spool = path.join(src, 'spool');
  const dir = path.join(last, 'spool');
  const counts = async (): Promise<Record<string, number>> => (await serverMemory(m)).requests;

  // tar lists the spool, then reads its files in order: after the first two, most are in
  // the page cache before tar gets there.
  const c0 = await counts();
  t.equal(await tarSum(last), await tarSum(src), `tar of ${files} files through the mount is byte for byte the source's`);
  await readAheadSettled(m);
  const c1 = await counts();
  const delta = (k: string): number => (c1[k] ?? 0) - (c0[k] ?? 0);
  t.ok(delta('files pushed') >= files / 2, `most files were pushed into the page cache (${delta('files pushed')} pushed, ${delta('pushes refused')} refused)`);
  t.ok(delta('READ') < files / 2, `tar's reads of most files were not sent (${delta('READ')} READs for ${files} files)`);

  // What the page cache holds is each file's bytes, read in any order.
  const order = [...Array(files).keys()].sort((a, b) => ((a * 37) % files) - ((b * 37) % files));
  for (const i of order) {
    const got = await fs.readFile(path.join(dir, name(i)));
    if (md5(got) !== md5(await fs.readFile(path.join(spool, name(i))))) t.fail(`${name(i)} differs`);
  }
  t.pass(`all ${files} files read back from the page cache, in another order`);

  // Once the kernel let the pages go, reads reach the server again, with the same bytes.
  if (process.getuid?.() === 0) {
    await fs.writeFile('/proc/sys/vm/drop_caches', '1');
    const r0 = (await counts()).READ ?? 0;
    t.equal(await tarSum(dir), await tarSum(spool), 'tar again after drop_caches: the same stream');
    t.ok(((await counts()).READ ?? 0) > r0, 'those reads reached the server');
  }

  // Readers racing the pushes (two tars of the same files at once, after the pages went):
  // a push waits for a page a READ in flight holds; nothing deadlocks, nothing differs.
  if (process.getuid?.() === 0) await fs.writeFile('/proc/sys/vm/drop_caches', '1');
  const expected = await tarSum(spool);
  const both = await Promise.all([tarSum(dir), tarSum(dir)]);
  t.same(both, [expected, expected], 'two tars at once read the source\'s bytes');
  await m.stop();
});

t.test('a second walk reads ahead only what the page cache lost: nothing, until the kernel lets pages go', { skip }, async (t) => {
  // A spool of many directories, with more files than the server remembers offering
  // (lowlevel.ts's OFFERED_MAX): without knowing which pushes the kernel took, a second
  // walk had each directory's files read, decompressed and pushed again as it was listed,
  // although every page was still in the kernel's page cache.
  const dirs = 100;
  const perDir = 45;
  const files = dirs * perDir;
  const { src, last, m } = await mountBackedUp(t, 'again', async (src) => {
    await fs.writeFile(path.join(src, 'a-file'), 'first\n'); // a walk that stats names (see the test above)
    for (let d = 0; d < dirs; d++) {
      const dir = path.join(src, 'spool', `d${String(d).padStart(3, '0')}`);
      await fs.mkdir(dir, { recursive: true });
      for (let i = 0; i < perDir; i++) await fs.writeFile(path.join(dir, `${i}.`), crypto.randomBytes(1 + ((d * perDir + i) * 7919) % 20_000));
    }
  });
  const counts = async (): Promise<Record<string, number>> => (await serverMemory(m)).requests;
  const expected = (await tarSum(src)).trim();

  // Two walks and a find, one right after the other (as a tape job's verify pass, or an
  // admin's diff -r then cp -a, would), each tar stream checked.
  const walks = await runProcess('sh', ['-c', 'for i in 1 2; do tar -C "$1" --sort=name -cf - . | md5sum; done; find "$1" -type f > /dev/null', 'sh', last]);
  t.same(walks.stdout.trim().split('\n'), [expected, expected], 'both walks: the source\'s bytes');
  await readAheadSettled(m);
  const c1 = await counts();
  t.ok((c1['files pushed'] ?? 0) >= files / 2, `the first walk's files were pushed into the page cache (${c1['files pushed']} pushes for ${files} files)`);
  const readAhead = c1['files read ahead'] ?? 0;
  t.ok(readAhead < files * 1.4, `each file was read ahead about once over both walks and the find (${readAhead} for ${files} files)`);

  // Once the kernel let the pages go, the READs that come say so: files are read ahead again.
  if (process.getuid?.() === 0) {
    await fs.writeFile('/proc/sys/vm/drop_caches', '1');
    t.equal((await tarSum(last)).trim(), expected, 'a walk after drop_caches: the same bytes');
    await readAheadSettled(m);
    const c2 = await counts();
    const again = (c2['files read ahead'] ?? 0) - readAhead;
    t.ok(again > files / 2, `most files were read ahead again (${again} of ${files})`);
    t.ok((c2.READ ?? 0) > (c1.READ ?? 0), 'the reads of the first ones reached the server');
  }
  await m.stop();
});

t.test('a walk that reads files ahead starts again at the first file of the next directory', { skip }, async (t) => {
  const { last, m } = await mountBackedUp(t, 'walk', async (src) => {
    for (const d of ['a', 'b', 'c']) {
      await fs.mkdir(path.join(src, d));
      for (let i = 0; i < 20; i++) await fs.writeFile(path.join(src, d, `m${i}`), `${d} ${i}\n`.repeat(100 + i));
    }
  });
  const taken = async (): Promise<number> => (await serverMemory(m)).requests['files read ahead'] ?? 0;
  const read = async (d: string, i: number): Promise<void> => {
    t.equal(await fs.readFile(path.join(last, d, `m${i}`), 'utf8'), `${d} ${i}\n`.repeat(100 + i), `${d}/m${i} reads back`);
  };

  // Two files of a in a row: the files after them are read ahead.
  await read('a', 0);
  await read('a', 1);
  await readAheadSettled(m);
  const afterA = await taken();
  t.ok(afterA >= 15, `files of a read ahead after its second file (${afterA})`);
  // The walk goes on into b: its first file is enough.
  await read('b', 0);
  await readAheadSettled(m);
  const afterB = await taken();
  t.ok(afterB - afterA >= 15, `files of b read ahead after its first file (${afterB - afterA})`);
  // A reader picking one file a while later starts nothing.
  await new Promise((r) => setTimeout(r, 3000));
  await read('c', 0);
  await readAheadSettled(m);
  t.equal(await taken(), afterB, 'one file of c read after a pause: nothing read ahead');
  await m.stop();
});

t.test('during such a walk, a directory listed with its nodes has its files read ahead from the first', { skip }, async (t) => {
  const { last, m } = await mountBackedUp(t, 'listed', async (src) => {
    for (const d of ['a', 'b']) {
      await fs.mkdir(path.join(src, d));
      for (let i = 0; i < 20; i++) await fs.writeFile(path.join(src, d, `m${i}`), `${d} ${i}\n`.repeat(100 + i));
    }
  });
  const counts = async () => (await serverMemory(m)).requests;
  for (const i of [0, 1]) t.equal(await fs.readFile(path.join(last, 'a', `m${i}`), 'utf8'), `a ${i}\n`.repeat(100 + i));
  await readAheadSettled(m);
  const before = await counts();
  // As tar goes on: it stats b (a lookup during a walk that stats files), then lists it.
  t.ok((await fs.lstat(path.join(last, 'b'))).isDirectory());
  t.equal((await fs.readdir(path.join(last, 'b'))).length, 20);
  await readAheadSettled(m);
  const listed = await counts();
  const taken = (listed['files read ahead'] ?? 0) - (before['files read ahead'] ?? 0);
  t.ok(taken >= 18, `b's files read ahead once it was listed, before any was read (${taken})`);
  for (let i = 0; i < 20; i++) t.equal(await fs.readFile(path.join(last, 'b', `m${i}`), 'utf8'), `b ${i}\n`.repeat(100 + i), `b/m${i} reads back`);
  await m.stop();
});

t.test('a damaged file among files read ahead: EIO for it, never its wrong bytes; the others read back', { skip }, async (t) => {
  // The binding assembles files read ahead from their stored chunks and checks each chunk
  // against its id: one that fails must reach neither its store nor the page cache.
  const name = (i: number): string => `m${String(i).padStart(3, '0')}`;
  const victims = [name(10), name(25)]; // random bytes, and text (stored compressed)
  const { src, last, m } = await mountBackedUp(t, 'bad', async (src) => {
    for (let i = 0; i < 40; i++) {
      const body = i % 2 === 0 ? crypto.randomBytes(2000 + i * 500) : Buffer.from(`line ${i} of a message body\n`.repeat(100 + i * 20));
      await fs.writeFile(path.join(src, name(i)), body);
    }
  }, { SNAPFS_FUSE_NO_PUSH: '1' }, async (repo) => {
    for (const v of victims) await flipStoredByte(repo, 'bad', v);
  });
  const sum = (f: string) => runProcess('bash', ['-o', 'pipefail', '-c', 'cat "$1" | md5sum', 'bash', f], { allowFail: true });
  const c0 = (await serverMemory(m)).requests;
  for (let i = 0; i < 40; i++) {
    const got = await sum(path.join(last, name(i)));
    if (victims.includes(name(i))) {
      t.not(got.code, 0, `${name(i)} (damaged) fails`);
      t.match(got.stderr, /Input\/output error/, `${name(i)}: EIO`);
    } else {
      t.equal(got.stdout, (await sum(path.join(src, name(i)))).stdout, `${name(i)} reads back`);
    }
  }
  await readAheadSettled(m);
  const c1 = (await serverMemory(m)).requests;
  const delta = (k: string): number => (c1[k] ?? 0) - (c0[k] ?? 0);
  t.ok(delta('files assembled') >= 20, `the files around them were assembled by the binding (${delta('files assembled')})`);
  t.equal(delta('files failed to assemble'), victims.length, 'both damaged files were dropped by the binding, not served');
  t.comment(`${delta('READ that waited for the read-ahead')} reads waited for the binding's threads`);
  await m.stop();
});

t.test('reads that come while the binding assembles a file wait for it; a damaged one still fails with EIO', { skip }, async (t) => {
  // Such a read is held by the binding until its file is assembled (then answered from
  // the store) or dropped (then handed to JS, which reports the damage): never wrong
  // bytes, never a hang. The many reads at once below mostly come while it works.
  const name = (i: number): string => `m${String(i).padStart(3, '0')}`;
  const victims = [name(12), name(20)];
  const body = (i: number): Buffer => Buffer.from(`message ${i}: ${'x'.repeat(i)} some text of a mail body\n`.repeat(12000 + i * 10));
  const { last, m } = await mountBackedUp(t, 'park', async (src) => {
    for (let i = 0; i < 24; i++) await fs.writeFile(path.join(src, name(i)), body(i));
  }, { SNAPFS_FUSE_NO_PUSH: '1', SNAPFS_FUSE_FETCH_DELAY_MS: '150' }, async (repo) => {
    for (const v of victims) await flipStoredByte(repo, 'park', v);
  });
  const c0 = (await serverMemory(m)).requests;
  for (const i of [0, 1]) t.equal(md5(await fs.readFile(path.join(last, name(i)))), md5(body(i)), `${name(i)} reads back`);
  await new Promise((r) => setTimeout(r, 100)); // the files after them are offered, and held 150 ms each
  const all = await Promise.allSettled(Array.from({ length: 22 }, (_, k) => fs.readFile(path.join(last, name(k + 2)))));
  all.forEach((r, k) => {
    const n = name(k + 2);
    if (victims.includes(n)) t.match(r, { status: 'rejected', reason: { code: 'EIO' } }, `${n} (damaged): EIO`);
    else if (r.status === 'rejected') t.fail(`${n}: ${r.reason}`);
    else if (md5(r.value) !== md5(body(k + 2))) t.fail(`${n}: wrong bytes`);
  });
  t.pass('every other file read back right');
  await readAheadSettled(m);
  const c1 = (await serverMemory(m)).requests;
  const delta = (k: string): number => (c1[k] ?? 0) - (c0[k] ?? 0);
  t.equal(delta('files failed to assemble'), victims.length, 'both damaged files were dropped by the binding');
  t.ok(delta('READ that waited for the read-ahead') >= 10, `reads waited for the binding's threads (${delta('READ that waited for the read-ahead')}; ${delta('READ of files read ahead')} answered from its store)`);
  await m.stop();
});

t.test('a file that is all hole does not stop the read-ahead of the files after it', { skip }, async (t) => {
  const name = (i: number): string => `f${String(i).padStart(2, '0')}`;
  const { src, last, m } = await mountBackedUp(t, 'holes', async (src) => {
    for (let i = 0; i < 30; i++) {
      const file = path.join(src, name(i));
      if (i === 5) {
        await fs.writeFile(file, '');
        await fs.truncate(file, 1 << 20); // a hole: stored with no chunk
      } else {
        await fs.writeFile(file, crypto.randomBytes(3000 + i * 100));
      }
    }
  });
  const c0 = (await serverMemory(m)).requests;
  for (const i of [0, 1]) t.equal(md5(await fs.readFile(path.join(last, name(i)))), md5(await fs.readFile(path.join(src, name(i)))), `${name(i)} reads back`);
  await readAheadSettled(m);
  const c1 = (await serverMemory(m)).requests;
  const assembled = (c1['files assembled'] ?? 0) - (c0['files assembled'] ?? 0);
  t.ok(assembled >= 25, `the files after the hole were read ahead too (${assembled} of 27 after the two read)`);
  for (let i = 2; i < 30; i++) {
    const got = await fs.readFile(path.join(last, name(i)));
    if (md5(got) !== md5(await fs.readFile(path.join(src, name(i))))) t.fail(`${name(i)} differs`);
  }
  t.pass('every file after them reads back, the hole as 1 MiB of zeros');
  await m.stop();
});

t.test('files with holes read ahead into reused memory: the holes read as zeros', { skip }, async (t) => {
  // The binding assembles a file in memory that earlier files used (a pool of large
  // blocks), writing only the chunks: every hole must be zeroed there, never show what the
  // memory held before.
  const name = (i: number): string => `f${String(i).padStart(2, '0')}`;
  const KiB = 1024;
  const { src, last, m } = await mountBackedUp(t, 'reuse', async (src) => {
    for (let i = 0; i < 24; i++) {
      const file = path.join(src, name(i));
      if (i % 2 === 0) {
        await fs.writeFile(file, crypto.randomBytes(1536 * KiB + i * 4 * KiB)); // fills the memory with non-zero bytes
        continue;
      }
      const fh = await fs.open(file, 'w');
      await fh.write(crypto.randomBytes(200 * KiB), 0, 200 * KiB, 0); // data, a hole, data, a hole to the end
      await fh.write(crypto.randomBytes(300 * KiB), 0, 300 * KiB, 1024 * KiB);
      await fh.truncate(1536 * KiB + i * 4 * KiB);
      await fh.close();
    }
  }, { SNAPFS_FUSE_NO_PUSH: '1' });
  const c0 = (await serverMemory(m)).requests;
  for (let i = 0; i < 24; i++) {
    const got = await fs.readFile(path.join(last, name(i)));
    if (md5(got) !== md5(await fs.readFile(path.join(src, name(i))))) t.fail(`${name(i)} differs`);
  }
  await readAheadSettled(m);
  const c1 = (await serverMemory(m)).requests;
  const assembled = (c1['files assembled'] ?? 0) - (c0['files assembled'] ?? 0);
  t.ok(assembled >= 18, `the binding assembled them (${assembled} of the 22 after the first two)`);
  t.ok((c1['READ of files read ahead'] ?? 0) - (c0['READ of files read ahead'] ?? 0) > 0, 'and answered their reads');
  t.pass('every file reads back, its holes as zeros');
  const sparse = (await fs.stat(path.join(src, name(1)))).blocks * 512;
  t.ok(sparse < 1024 * KiB, `the odd files are sparse in the source (${sparse} bytes allocated)`);
  await m.stop();
});
