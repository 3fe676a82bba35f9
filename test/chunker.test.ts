// The chunker over reused read blocks, and the byte budget that bounds them: chunks are
// views of the block, the carried tail survives the block being overwritten once its
// chunks are stored, and cut points do not depend on block sizes.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { Chunker } from '../lib/chunk/chunker.js';
import { ByteBudget } from '../lib/util/byte-budget.js';
import { cdcCuts } from '../lib/platform/native.js';

const gear = Buffer.alloc(2048);
for (let i = 0; i < 256; i++) createHash('sha256').update(`snapfs-gear-${i}`).digest().copy(gear, i * 8, 0, 8);
const params = { minSize: 4 * 1024, avgSize: 16 * 1024, maxSize: 64 * 1024 };

/**
 * Streams `data` through one reused block of `blockBytes` with reads of at most `readMax`;
 * returns copies of the chunks and how many were not views of the block.
 */
function chunkThroughBlock(data: Buffer, blockBytes: number, readMax: number): { chunks: Buffer[]; notViews: number } {
  const chunker = new Chunker(gear, params);
  const block = Buffer.alloc(blockBytes);
  const out: Buffer[] = [];
  let notViews = 0;
  let pos = 0;
  while (pos < data.length) {
    const at = chunker.refill(block);
    const n = Math.min(block.length - at, readMax, data.length - pos);
    data.copy(block, at, pos, pos + n);
    pos += n;
    const chunks = chunker.cut(block, at + n, pos >= data.length);
    for (const c of chunks) if (c.buffer !== block.buffer) notViews++;
    out.push(...chunks.map((c) => Buffer.from(c)));
    block.fill(0xee); // the block is reused: nothing cut from it may depend on it any more
  }
  return { chunks: out, notViews };
}

t.test('cut points do not depend on blocks or reads; the tail survives reuse of the block', async (t) => {
  const data = randomBytes(3 * 1024 * 1024 + 12345);
  const ends = Array.from(cdcCuts(data, 0, data.length, true, gear, params.minSize, params.avgSize, params.maxSize));
  for (const [blockBytes, readMax] of [[2 * params.maxSize + 1, Infinity], [256 * 1024, 100_000], [8 * 1024 * 1024, Infinity], [200 * 1024, 7 * 1024]]) {
    const { chunks, notViews } = chunkThroughBlock(data, blockBytes!, readMax!);
    t.equal(notViews, 0, 'chunks are views of the block');
    let at = 0;
    const got = chunks.map((c) => (at += c.length));
    t.same(got, ends, `block ${blockBytes}, reads of at most ${readMax}: same cuts`);
    t.ok(Buffer.concat(chunks).equals(data), 'same bytes');
  }
});

t.test('a block too small for the carried tail is refused', async (t) => {
  const chunker = new Chunker(gear, params);
  const block = randomBytes(params.maxSize);
  chunker.refill(block);
  chunker.cut(block, block.length, false);
  t.throws(() => chunker.refill(Buffer.alloc(8)), RangeError);
});

t.test('byte budget: waits in order, cuts requests to its capacity', async (t) => {
  const budget = new ByteBudget(100);
  const order: string[] = [];
  t.equal(await budget.acquire(60), 60);
  const big = budget.acquire(80).then((n) => order.push(`big ${n}`));
  const small = budget.acquire(10).then((n) => order.push(`small ${n}`));
  await new Promise((r) => setImmediate(r));
  t.same(order, [], 'a small request does not pass a waiting large one');
  budget.release(60);
  await Promise.all([big, small]);
  t.same(order, ['big 80', 'small 10'], 'served in order once there is room');
  t.equal(budget.reserved, 90);
  budget.release(80);
  budget.release(10);
  t.equal(await budget.acquire(1000), 100, 'a request above the capacity gets the capacity');
  budget.release(100);
  t.equal(budget.reserved, 0);
  t.throws(() => new ByteBudget(0), RangeError);
});
