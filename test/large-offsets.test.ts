// Offsets past 4 GiB: a nightly database dump easily exceeds 2^32 bytes, and any 32-bit
// offset along the way (chunker, hole map, chunk list, pack reads, FUSE reads, restore)
// would give wrong bytes there. A sparse 6 GiB file keeps the test cheap: its data lies at
// the start, across the 2^32 boundary and at the very end, and only that is stored.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { runProcess, runSnapfs, tmpDir } from './helpers/cli.js';
import { mountForeground } from './helpers/mount.js';

const GiB = 1024 ** 3;
const SIZE = 6 * GiB;
const REGIONS = [
  { at: 0, length: 1 << 20 },
  { at: 4 * GiB - (1 << 20) - 12345, length: 5 << 20 }, // crosses 2^32
  { at: SIZE - 777, length: 777 }, // ends the file
];
// Points inside holes, which must read as zeros.
const HOLES = [2 * GiB, 4 * GiB + (5 << 20), 5 * GiB + 3];

async function readAt(file: string, at: number, length: number): Promise<Buffer> {
  const fh = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, length - done, at + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  } finally {
    await fh.close();
  }
}

async function sameBytes(t: any, what: string, file: string, data: Buffer[]): Promise<void> {
  for (let i = 0; i < REGIONS.length; i++) {
    const r = REGIONS[i]!;
    t.ok((await readAt(file, r.at, r.length)).equals(data[i]!), `${what}: bytes at ${r.at} (${r.length} B)`);
  }
  for (const at of HOLES) t.ok((await readAt(file, at, 4096)).equals(Buffer.alloc(4096)), `${what}: zeros in the hole at ${at}`);
}

t.test('a 6 GiB file with data across 2^32: restore and the mount give the same bytes', async (t) => {
  const work = await tmpDir(t, 'large-offsets');
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  await fs.mkdir(src);
  const file = path.join(src, 'dump.sql');
  const data = REGIONS.map((r) => randomBytes(r.length));
  const fh = await fs.open(file, 'w');
  try {
    for (let i = 0; i < REGIONS.length; i++) await fh.write(data[i]!, 0, data[i]!.length, REGIONS[i]!.at);
  } finally {
    await fh.close();
  }
  const srcStat = await fs.stat(file);
  t.equal(srcStat.size, SIZE);

  await runSnapfs(['init', repo]);
  const b = await runSnapfs(['backup', repo, src, '--source', 'db', '--json']);
  const stats = b.json.snapshot.stats;
  t.equal(stats.bytesTotal, SIZE);
  t.ok(stats.bytesRead < 16 << 20, `only the data was read (${stats.bytesRead} B)`);

  const out = path.join(work, 'out');
  await runSnapfs(['restore', repo, 'db@last', out]);
  const restored = path.join(out, 'dump.sql');
  const st = await fs.stat(restored);
  t.equal(st.size, SIZE, 'restored size');
  t.ok(st.blocks <= srcStat.blocks, `restored sparse: ${st.blocks} blocks, source ${srcStat.blocks}`);
  await sameBytes(t, 'restored', restored, data);

  const mnt = path.join(work, 'mnt');
  await fs.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt);
  const viaMount = path.join(mnt, 'db', 'last', 'dump.sql');
  t.equal((await fs.stat(viaMount)).size, SIZE, 'size through the mount');
  await sameBytes(t, 'mount', viaMount, data);
  // And with a real tool: dd across the boundary.
  const region = REGIONS[1]!;
  const copy = path.join(work, 'region');
  await runProcess('dd', [`if=${viaMount}`, `of=${copy}`, 'bs=1M', `skip=${region.at}`, `count=${region.length}`, 'iflag=skip_bytes,count_bytes', 'status=none']);
  t.ok((await fs.readFile(copy)).equals(data[1]!), 'dd through the mount across 2^32');
  await m.stop();
});
