// Reads through the VFS with chunk memory recycled (the mount's setting) return exactly the
// stored bytes, even when the chunk cache is far smaller than the data read at once and
// evicted chunks' buffers are reused while other reads are still waiting.
import t from 'tap';
import { promises as fs } from 'node:fs';
import crypto from 'node:crypto';
import path from 'node:path';
import { tmpDir } from './helpers/cli.js';
import { backup, initRepo } from './helpers/mount.js';
import { Repository } from '../lib/store/repository.js';
import { ROOT_ID, Vfs } from '../lib/read/vfs.js';
import { BufferPool, poolCapacity } from '../lib/util/buffer-pool.js';

t.test('buffer pool: sizes, reuse, bound', async (t) => {
  t.equal(poolCapacity(1), 4096);
  t.equal(poolCapacity(5000), 5120, 'four sizes per doubling');
  t.equal(poolCapacity(1 << 20), 1 << 20);
  const pool = new BufferPool(3 * 65536);
  const a = pool.take(60_000);
  t.equal(a.length, 60_000);
  pool.give(a);
  t.equal(pool.take(50_000).buffer, a.buffer, 'a free buffer up to twice the size is reused');
  const bufs = [pool.take(65536), pool.take(65536), pool.take(65536), pool.take(65536)];
  for (const b of bufs) pool.give(b);
  t.not(pool.take(65536).buffer, bufs[0]!.buffer, 'the oldest free buffer was dropped to stay within the bound');
});

t.test('recycled chunk memory: concurrent reads return the stored bytes', async (t) => {
  const work = await tmpDir(t, 'file-reader');
  const src = path.join(work, 'src');
  const repoDir = path.join(work, 'repo');
  await fs.mkdir(src);
  const files = new Map<string, Buffer>();
  for (let i = 0; i < 6; i++) {
    // Partly compressible, so chunks are both compressed and stored (uncompressed) blobs.
    const data = Buffer.concat([crypto.randomBytes(300_000 + i * 77_777), Buffer.alloc(200_000 + i * 1000, i)]);
    files.set(`f${i}`, data);
    await fs.writeFile(path.join(src, `f${i}`), data);
  }
  await initRepo(repoDir); // 64 KiB average chunks
  await backup(repoDir, src, 'data');
  const repo = await Repository.open(repoDir, { readOnly: true });
  t.teardown(() => repo.close());
  const vfs = await Vfs.open(repo, { chunkCacheBytes: 512 * 1024, readAheadChunks: 4 });
  t.teardown(() => vfs.close());
  const look = async (parent: bigint, name: string): Promise<bigint> => (await vfs.lookup(parent, Buffer.from(name))).id;
  const source = await look(ROOT_ID, 'data');
  const snap = (await vfs.readdir(source)).entries.map((e) => e.name.toString()).find((n) => /^\d{4}-/.test(n))!;
  const dir = await look(source, snap);
  let bad = 0;
  for (let round = 0; round < 3; round++) {
    await Promise.all(
      [...files].map(async ([name, want]) => {
        const fh = await vfs.open(await look(dir, name));
        const got = Buffer.alloc(want.length);
        const reads: Array<Promise<void>> = [];
        // Sequential 128 KiB reads (read-ahead), all in flight at once, plus odd-sized ones
        // across chunk boundaries.
        for (let off = 0; off < want.length; off += 131072) {
          reads.push(vfs.read(fh, off, 131072, (d) => void d.copy(got, off)));
        }
        for (let off = 1000 * round; off < want.length; off += 99_991) {
          reads.push(vfs.read(fh, off, 70_001, (d) => void (d.equals(want.subarray(off, off + 70_001)) || bad++)));
        }
        await Promise.all(reads);
        vfs.release(fh);
        if (!got.equals(want)) bad++;
      }),
    );
  }
  t.equal(bad, 0, 'every read returned the stored bytes');
});

t.test('a stretch of a file for the binding to stream: the chunks that cover it, in order', async (t) => {
  const work = await tmpDir(t, 'stretch');
  const src = path.join(work, 'src');
  const repoDir = path.join(work, 'repo');
  await fs.mkdir(src);
  const size = 3_000_000;
  await fs.writeFile(path.join(src, 'big'), Buffer.concat([crypto.randomBytes(size / 2), Buffer.alloc(size / 2, 7)]));
  // A hole between two runs of data: the stretch has no chunk for it.
  const sparse = await fs.open(path.join(src, 'sparse'), 'w');
  await sparse.write(crypto.randomBytes(400_000), 0, 400_000, 0);
  await sparse.write(crypto.randomBytes(400_000), 0, 400_000, 2_000_000);
  await sparse.close();
  await initRepo(repoDir); // 64 KiB average chunks
  await backup(repoDir, src, 'data');
  const repo = await Repository.open(repoDir, { readOnly: true });
  t.teardown(() => repo.close());
  const vfs = await Vfs.open(repo);
  t.teardown(() => vfs.close());
  const look = async (parent: bigint, name: string): Promise<bigint> => (await vfs.lookup(parent, Buffer.from(name))).id;
  const source = await look(ROOT_ID, 'data');
  const snap = (await vfs.readdir(source)).entries.map((e) => e.name.toString()).find((n) => /^\d{4}-/.test(n))!;
  const dir = await look(source, snap);
  const big = await look(dir, 'big');
  const attr = await vfs.getattr(big);

  t.equal(await vfs.storedStretch(big, 0, 1 << 20, size), undefined, 'a file no larger than minSize is not streamed');
  for (const [from, bytes] of [[0, 1 << 20], [777_777, 500_000], [size - 10, 1 << 20]] as const) {
    const s = (await vfs.storedStretch(big, from, bytes, 0))!;
    t.equal(s.size, size);
    t.equal(s.ino, BigInt(attr.ino), 'with the file\'s inode number');
    const first = s.chunks[0]!;
    t.ok(first.fileOffset <= from && from < first.fileOffset + first.rawLength, `from ${from}: the first chunk holds it`);
    s.chunks.forEach((c, i) => {
      if (i > 0) t.equal(c.fileOffset, s.chunks[i - 1]!.fileOffset + s.chunks[i - 1]!.rawLength, `chunk ${i} follows the one before`);
      t.ok(c.fileOffset < from + bytes, `chunk ${i} starts within the stretch`);
    });
    const last = s.chunks[s.chunks.length - 1]!;
    t.equal(s.end, last.fileOffset + last.rawLength, 'the stretch ends with its last chunk');
    t.ok(s.end >= Math.min(size, from + bytes), 'and covers it');
  }
  const sp = await look(dir, 'sparse');
  const inHole = (await vfs.storedStretch(sp, 1_000_000, 2_000_000, 0))!;
  t.ok(inHole.chunks[0]!.fileOffset >= 1_000_000, 'from inside a hole: the first chunk after it');
  t.equal(await vfs.storedStretch(sp, 1_000_000, 500_000, 0), undefined, 'a stretch that is all hole: nothing to stream');
});
