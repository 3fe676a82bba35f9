// Streaming large files (lib/fuse/lowlevel.ts, native/src/fuse_stream.c): a file larger
// than the read-ahead across files takes, read from its start, is handed to the binding a
// stretch at a time; its threads load and verify the chunks a few MiB ahead of the reader,
// and the libfuse thread answers the reads from them. Those answers must be the file's
// bytes whatever the reads look like (direct reads of any size, across chunks and holes,
// several files at once, more than the binding streams at a time), and a chunk whose
// stored bytes are damaged must never be served: EIO from JS, also for reads that waited
// for that chunk.
import t from 'tap';
import { promises as fs } from 'node:fs';
import crypto from 'node:crypto';
import path from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { fuseAvailable, mountBackedUp, serverMemory } from './helpers/mount.js';
import { flipStoredByte } from './helpers/damage.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const MiB = 1024 * 1024;
const md5 = (b: Buffer): string => crypto.createHash('md5').update(b).digest('hex');
const md5Of = async (f: string): Promise<string> => (await runProcess('bash', ['-o', 'pipefail', '-c', 'cat "$1" | md5sum', 'bash', f])).stdout.split(' ')[0]!;

/** Text that compresses (stored compressed) with random runs in it (chunk boundaries vary); not the same twice. */
function mixedContent(bytes: number, seed: number): Buffer {
  const out = Buffer.alloc(bytes);
  let at = 0;
  for (let i = 0; at < bytes; i++) {
    const part = i % 3 === 2 ? crypto.randomBytes(40_000 + ((seed * 7919 + i * 104_729) % 90_000)) : Buffer.from(`row ${seed}.${i}: ${'some dump text, '.repeat(8)}\n`.repeat(900));
    at += part.copy(out, at);
  }
  return out;
}

t.test('large files read through are answered from the stream, with their bytes', { skip }, async (t) => {
  const { src, last, m } = await mountBackedUp(t, 'big', async (src) => {
    await fs.writeFile(path.join(src, 'dump.sql'), mixedContent(40 * MiB, 1)); // more than one 32 MiB stretch
    await fs.writeFile(path.join(src, 'random.bin'), crypto.randomBytes(12 * MiB)); // stored uncompressed
    // A hole in the middle: reads across it are answered by JS, the data around it streamed.
    const sparse = await fs.open(path.join(src, 'sparse.img'), 'w');
    await sparse.write(mixedContent(8 * MiB, 2), 0, 8 * MiB, 0);
    await sparse.write(mixedContent(6 * MiB, 3), 0, 6 * MiB, 18 * MiB);
    await sparse.close();
    for (let i = 0; i < 3; i++) await fs.writeFile(path.join(src, `seg${i}.idx`), mixedContent(7 * MiB, 10 + i));
  });
  const requests = async (): Promise<Record<string, number>> => (await serverMemory(m)).requests;
  const files = ['dump.sql', 'random.bin', 'sparse.img', 'seg0.idx', 'seg1.idx', 'seg2.idx'];
  const expected = Object.fromEntries(await Promise.all(files.map(async (f) => [f, md5(await fs.readFile(path.join(src, f)))])));

  // One reader, start to end.
  const c0 = await requests();
  t.equal(await md5Of(path.join(last, 'dump.sql')), expected['dump.sql'], 'dump.sql reads back');
  const c1 = await requests();
  const reads = (c1.READ ?? 0) - (c0.READ ?? 0);
  const streamed = (c1['READ of streamed files'] ?? 0) - (c0['READ of streamed files'] ?? 0);
  t.ok(reads >= 40 * MiB / (128 * 1024), `the kernel read it in ${reads} READs`);
  // The first reads reach JS (they start the stream), and on a loaded machine more of them
  // do before the stream's chunks are loaded (88-95% answered by the binding seen here; the
  // share is measured in benchmarks/, not asserted): most must be the binding's.
  t.ok(streamed > reads / 2, `the binding answered ${streamed} of them`);

  // Uncompressed chunks, and a file with a hole.
  for (const f of ['random.bin', 'sparse.img']) t.equal(await md5Of(path.join(last, f)), expected[f], `${f} reads back`);
  const sparse = await fs.readFile(path.join(last, 'sparse.img'));
  t.ok(sparse.subarray(8 * MiB, 18 * MiB).every((b) => b === 0), 'the hole reads as zeros');

  // Direct reads: no page cache, each one a READ of exactly that size, across chunks.
  const direct = async (file: string, bs: number, skipBlocks = 0, count?: number): Promise<string> =>
    (await runProcess('bash', ['-o', 'pipefail', '-c', `dd if="$1" iflag=direct bs=${bs} skip=${skipBlocks} ${count ? `count=${count}` : ''} status=none | md5sum`, 'bash', file])).stdout.split(' ')[0]!;
  const seg0 = await fs.readFile(path.join(src, 'seg0.idx'));
  t.equal(await direct(path.join(last, 'seg0.idx'), 96 * 1024), expected['seg0.idx'], 'seg0.idx in direct 96 KiB reads (not aligned to the chunks)');
  const dump = await fs.readFile(path.join(src, 'dump.sql'));
  for (const block of [0, 5, 77, 300, 319]) {
    t.equal(await direct(path.join(last, 'dump.sql'), 128 * 1024, block, 1), md5(dump.subarray(block * 128 * 1024, (block + 1) * 128 * 1024)), `a direct read of dump.sql's block ${block}`);
  }
  t.equal(await direct(path.join(last, 'seg0.idx'), 4096, 1000, 8), md5(seg0.subarray(1000 * 4096, 1008 * 4096)), 'direct 4 KiB reads from the middle of seg0.idx');

  // Six files at once: more than the binding streams at a time (4).
  await runProcess('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches'], { allowFail: true });
  const all = await Promise.all(files.map((f) => md5Of(path.join(last, f))));
  t.same(all, files.map((f) => expected[f]), 'six files read at once read back');
  await m.stop();
});

t.test('a damaged chunk in a streamed file: EIO, never its bytes; reads before it and other files read', { skip }, async (t) => {
  let damaged = { fileOffset: 0, length: 0 };
  const body = mixedContent(24 * MiB, 5);
  const other = mixedContent(9 * MiB, 6);
  for (const delay of ['0', '40']) {
    await t.test(`chunks loaded ${delay === '0' ? 'at once' : 'slowly (reads wait for them)'}`, async (t) => {
      const { last, m } = await mountBackedUp(t, 'bad', async (src) => {
        await fs.writeFile(path.join(src, 'dump.sql'), body);
        await fs.writeFile(path.join(src, 'other.sql'), other);
      }, { SNAPFS_FUSE_FETCH_DELAY_MS: delay }, async (repo) => {
        damaged = await flipStoredByte(repo, 'bad', 'dump.sql', 'middle');
      });
      t.ok(damaged.fileOffset > 4 * MiB, `the damaged chunk lies at ${damaged.fileOffset} (streamed by then)`);
      const c0 = (await serverMemory(m)).requests;
      const out = path.join(await tmpDir(t, 'out'), 'dump.sql');
      const got = await runProcess('sh', ['-c', 'cat "$1" > "$2"', 'sh', path.join(last, 'dump.sql'), out], { allowFail: true });
      t.not(got.code, 0, 'cat fails');
      t.match(got.stderr, /Input\/output error/, 'with EIO');
      const copied = await fs.readFile(out);
      t.ok(copied.length <= damaged.fileOffset, `cat got ${copied.length} bytes, none of the damaged chunk`);
      t.ok(copied.equals(body.subarray(0, copied.length)), 'and those are the file\'s first bytes');
      const c1 = (await serverMemory(m)).requests;
      t.ok((c1['stream chunks failed'] ?? 0) - (c0['stream chunks failed'] ?? 0) >= 1, 'the binding found the damaged chunk');
      if (delay !== '0') t.ok((c1['READ that waited for the stream'] ?? 0) > (c0['READ that waited for the stream'] ?? 0), 'reads waited for chunks being loaded');
      // The bytes after the damaged chunk still read (a read from the first page that holds
      // none of it: the kernel reads whole pages).
      const after = Math.ceil((damaged.fileOffset + damaged.length) / 4096) * 4096;
      const tail = await runProcess('bash', ['-o', 'pipefail', '-c', `tail -c +${after + 1} "$1" | md5sum`, 'bash', path.join(last, 'dump.sql')]);
      t.equal(tail.stdout.split(' ')[0], md5(body.subarray(after)), 'the rest of the file after the damaged chunk reads back');
      t.equal(await md5Of(path.join(last, 'other.sql')), md5(other), 'another large file reads back');
      await m.stop();
    });
  }
});
