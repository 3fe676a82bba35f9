// The compression pool reuses its batch and output buffers. What must hold whatever the
// order of releases: every frame decompresses to its input, a frame's bytes stay intact
// until it is released, and a view used after its batch went back to a worker is empty
// (never another batch's bytes), which PackWriter refuses to store.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CompressedFrame, CompressionPool, decompressExact } from '../lib/store/compression.js';
import { PackWriter } from '../lib/store/pack-files.js';
import { RepoLayout } from '../lib/store/layout.js';
import { BlobType, Compression } from '../lib/format/pack.js';

/** Compressible input of `n` bytes, distinct per seed. */
function input(seed: number, n: number, shared: boolean): Uint8Array {
  const text = Buffer.from(`message ${seed} `.repeat(Math.ceil(n / 12) + 1)).subarray(0, n);
  text.set(randomBytes(Math.min(64, n)), 0);
  if (!shared) return text;
  const view = new Uint8Array(new SharedArrayBuffer(n + 16), 8, n);
  view.set(text);
  return view;
}

t.test('frames stay intact until released, in any order, over many reused batches', async (t) => {
  const pool = new CompressionPool(1, 2);
  t.teardown(() => pool.close());
  let held: Array<{ raw: Uint8Array; frame: CompressedFrame; copy: Buffer }> = [];
  let checked = 0;
  for (let round = 0; round < 30; round++) {
    // Each round: many small inputs (several to a batch) and a few large ones (a batch each).
    const inputs: Uint8Array[] = [];
    for (let i = 0; i < 300; i++) inputs.push(input(round * 1000 + i, 1 + ((i * 7919) % 20_000), i % 5 === 0));
    for (let i = 0; i < 3; i++) inputs.push(input(round * 1000 + 500 + i, 3 * 1024 * 1024 + i, i === 0));
    const frames = await Promise.all(inputs.map((raw) => pool.compress(raw)));
    frames.forEach((frame, i) => held.push({ raw: inputs[i]!, frame, copy: Buffer.from(frame.bytes) }));
    // Release a random half; the other half waits across the next rounds' batches.
    held.sort(() => Math.random() - 0.5);
    const keep = held.slice(0, held.length >> 1);
    for (const h of held.slice(held.length >> 1)) {
      if (!h.frame.bytes.equals(h.copy)) t.fail(`frame changed before its release (round ${round})`);
      const back = decompressExact(h.frame.bytes, h.raw.length, 'frame');
      if (!back.equals(h.raw)) t.fail(`frame does not decompress to its input (round ${round})`);
      h.frame.release();
      h.frame.release(); // twice is harmless
      checked++;
    }
    held = keep;
  }
  for (const h of held) {
    t.ok(h.frame.bytes.equals(h.copy) && decompressExact(h.frame.bytes, h.raw.length, 'frame').equals(h.raw), 'held frame intact at the end');
    h.frame.release();
  }
  t.ok(checked > 4000, `${checked} frames checked`);
});

t.test('a view used after its batch went back to a worker is empty, and a pack refuses it', async (t) => {
  const pool = new CompressionPool(1, 1);
  t.teardown(() => pool.close());
  const raw = input(1, 100_000, false);
  const frame = await pool.compress(raw);
  const stale = frame.bytes;
  const storedLength = stale.length;
  t.ok(storedLength > 0 && storedLength < raw.length, 'compressed');
  frame.release();
  // The next batch takes the released buffer back to the worker.
  const next = await pool.compress(input(2, 100_000, false));
  t.equal(stale.length, 0, 'the stale view is detached, not pointing at the next batch');
  next.release();

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snapfs-pool-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const writer = new PackWriter(new RepoLayout(dir));
  await t.rejects(
    writer.add({ id: Buffer.alloc(16, 1), type: BlobType.Data, compression: Compression.Zstd, rawLength: raw.length, storedLength, stored: stale }),
    /0 bytes for a blob of/,
  );
  await writer.discard();
});

t.test('a pool closed while its workers are still starting closes cleanly, and again', async (t) => {
  // The first blob starts all the workers; the pool closes while the idle ones may still be
  // loading zstd. A worker terminated mid-load aborted the whole process: close must wait.
  // (Few rounds: under tap every worker loads tap's hooks too, a second or more each.)
  const rounds = 4;
  let intact = 0;
  for (let i = 0; i < rounds; i++) {
    const pool = new CompressionPool(3, 2);
    const raw = input(i, 10_000, false);
    const frame = await pool.compress(raw);
    if (decompressExact(frame.bytes, raw.length, 'frame').equals(raw)) intact++;
    frame.release();
    await pool.close();
    await pool.close();
  }
  t.equal(intact, rounds, 'every frame decompresses to its input');
});

t.test('a pool closed while a batch is in flight keeps the process alive until its workers exit', async (t) => {
  // A failed backup closes the pool while blobs of other files may still be compressing.
  // Each finished batch used to unreference its worker again: with close() already waiting
  // for that worker's exit, nothing held the event loop, so the process ended at once with
  // exit code 0 and the backup's failure unreported (the guard of cli/completion.ts). In a
  // child process, since what is tested is that the event loop does not run dry.
  const url = new URL('../lib/store/compression.js', import.meta.url).href;
  const script = `
    const { CompressionPool } = await import(process.env.POOL_URL);
    const closed = [];
    for (let round = 0; round < 10; round++) {
      const pool = new CompressionPool(3, 2);
      (await pool.compress(Buffer.alloc(1000, 1))).release(); // workers started
      // Batches in flight on both workers, their callers gone (never awaited): close now.
      const inFlight = [1, 2, 3, 4].map((i) => pool.compress(Buffer.alloc(4 << 20, i)));
      inFlight.forEach((p) => p.then((f) => f.release(), () => undefined));
      await pool.close();
      closed.push(round);
      const late = await pool.compress(Buffer.alloc(10, 1)).then(() => 'compressed', (err) => err.message);
      if (round === 0) console.log(JSON.stringify({ late }));
    }
    console.log(JSON.stringify({ closed: closed.length }));
  `;
  // From a file: workers inherit the parent's flags, and --input-type breaks their start.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snapfs-pool-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'close-in-flight.mjs');
  fs.writeFileSync(file, script);
  const child = spawn(process.execPath, [file], {
    env: { ...process.env, POOL_URL: url, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const lines = out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  t.equal(code, 0, 'the child exited normally');
  t.match(lines[0], { late: /closed/ }, 'a blob given to a closed pool is refused, not left unsettled');
  t.same(lines[1], { closed: 10 }, 'every close() returned: the process did not end while waiting for it');
});
