// Worker thread body of the compression pool. A batch arrives as one transferred buffer
// plus views of shared memory (see CompressJob), and leaves as one transferred buffer:
// structured-cloning many small views would copy their (often much larger) backing
// buffers one by one. Frames are written into one reused scratch buffer, so that the
// only allocation per batch is the result itself.
import { parentPort, workerData } from 'node:worker_threads';
import { zstd as binding } from '../platform/cjs-packages.js';
import type { CompressJob, CompressResult } from './compression.js';

const cctx = new binding.CCtx();
cctx.setParameter(binding.CParameter.compressionLevel, (workerData as { level: number }).level);
let scratch = Buffer.alloc(0);

parentPort!.on('message', (msg: CompressJob) => {
  const packed = Buffer.from(msg.packed);
  const inputs: Uint8Array[] = [];
  let pos = 0;
  let bound = 0;
  for (const item of msg.items) {
    const input = typeof item === 'number' ? packed.subarray(pos, (pos += item)) : item;
    inputs.push(input);
    bound += binding.compressBound(input.length);
  }
  if (scratch.length < bound) scratch = Buffer.allocUnsafe(bound);
  const lengths: number[] = [];
  let at = 0;
  for (const input of inputs) {
    // ZSTD_compress2 writes the content size into the frame header (decompressExact needs it).
    const n = cctx.compress2(scratch.subarray(at), input);
    lengths.push(n);
    at += n;
  }
  const data = new Uint8Array(at);
  data.set(scratch.subarray(0, at));
  const result: CompressResult = { job: msg.job, data: data.buffer, lengths };
  parentPort!.postMessage(result, [data.buffer]);
});
