// READs of up to 1 MiB (FUSE_MAX_PAGES, negotiated by the binding in libfuse's INIT reply
// where the kernel offers it, Linux 4.20+): a sequential reader's read-ahead window goes
// in one request, not eight. Every size and offset the kernel may now ask for must answer
// the file's bytes: whole 1 MiB reads across chunk boundaries, reads that end past the end
// of the file, direct reads at odd offsets.
import t from 'tap';
import { promises as fs } from 'node:fs';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { runProcess, tmpDir } from './helpers/cli.js';
import { backup, fuseAvailable, initRepo, mountForeground, serverMemory } from './helpers/mount.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const [major, minor] = os.release().split('.').map(Number) as [number, number];
const kernelHasMaxPages = major > 4 || (major === 4 && minor >= 20);
const md5 = (b: Buffer): string => crypto.createHash('md5').update(b).digest('hex');

t.test('large reads: 1 MiB requests, every byte the file\'s', { skip }, async (t) => {
  const work = await tmpDir(t, 'mount-bigreads');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(src);
  // 24 MiB and a bit: half random (stored as is), half compressible text, and an odd tail.
  const size = 24 * 1024 * 1024 + 12_345;
  const content = Buffer.concat([
    crypto.randomBytes(size / 2 - 1000),
    Buffer.from('INSERT INTO messages VALUES (42, \'hello\');\n'.repeat(Math.ceil(size / 2 / 44))),
  ]).subarray(0, size);
  await fs.writeFile(path.join(src, 'dump.sql'), content);
  await initRepo(repo);
  await backup(repo, src, 'big');
  await fs.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt);
  const file = path.join(mnt, 'big', 'last', 'dump.sql');

  const before = (await serverMemory(m)).requests.READ ?? 0;
  t.equal(md5(await fs.readFile(file)), md5(content), 'a sequential read returns the file\'s bytes');
  const reads = ((await serverMemory(m)).requests.READ ?? 0) - before;
  if (kernelHasMaxPages) {
    // 128 KiB requests would take at least 193.
    t.ok(reads > 0 && reads <= 60, `${reads} READs for ${(size / 1048576).toFixed(1)} MiB: up to 1 MiB each`);
  }

  // Direct reads (each one a request of exactly that size) at offsets that cross chunks
  // and the end of the file.
  const dd = async (bs: number, skipBlocks: number, count: number): Promise<string> =>
    (await runProcess('sh', ['-c', `dd if="$1" iflag=direct,skip_bytes bs=${bs} skip=${skipBlocks} count=${count} status=none | md5sum`, 'sh', file])).stdout.split(' ')[0]!;
  for (const [offset, count] of [[0, 3], [12_582_912 - 4096, 2], [size - 1_048_576 - 4096, 2], [size - 4096, 1]] as const) {
    const expected = md5(content.subarray(offset, Math.min(size, offset + count * 1_048_576)));
    t.equal(await dd(1_048_576, offset, count), expected, `direct 1 MiB reads from offset ${offset}`);
  }
  await m.stop();
});
