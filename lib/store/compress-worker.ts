// Worker thread body of the compression pool. A batch arrives as one transferred buffer
// plus views of shared memory (see CompressJob), and leaves as one transferred buffer:
// structured-cloning many small views would copy their (often much larger) backing
// buffers one by one. Frames are written straight into an output buffer the main thread
// gave back after an earlier batch, and the input buffer goes back with the result: fresh
// buffers for every batch cost a page fault per 4 KiB, which under a virtualized MMU was
// a third of the backup's system time.
import { parentPort, workerData } from 'node:worker_threads';
import { zstd as binding } from '../platform/zstd.js';
import { BufferPool } from '../util/buffer-pool.js';
import type { CompressJob, CompressResult, CompressWorkerData } from './compression.js';

const { level, outputBytes, spareOutputBytes } = workerData as CompressWorkerData;
const cctx = new binding.CCtx();
cctx.setParameter(binding.CParameter.compressionLevel, level);
const outputs = new BufferPool(spareOutputBytes);

parentPort!.on('message', (msg: CompressJob | null) => {
  if (msg === null) {
    parentPort!.close(); // the pool closes: nothing keeps this thread alive once the port is shut
    return;
  }
  for (const spare of msg.spareOutputs) outputs.give(Buffer.from(spare));
  const packed = Buffer.from(msg.packed);
  const inputs: Uint8Array[] = [];
  let pos = 0;
  let bound = 0;
  for (const item of msg.items) {
    const input = typeof item === 'number' ? packed.subarray(pos, (pos += item)) : item;
    inputs.push(input);
    bound += binding.compressBound(input.length);
  }
  const out = outputs.take(Math.max(bound, outputBytes));
  const lengths: number[] = [];
  let at = 0;
  for (const input of inputs) {
    // ZSTD_compress2 writes the content size into the frame header (decompressExact needs it).
    const n = cctx.compress2(out.subarray(at), input);
    lengths.push(n);
    at += n;
  }
  const data = out.buffer as ArrayBuffer;
  const result: CompressResult = { job: msg.job, data, lengths, packed: msg.packed };
  parentPort!.postMessage(result, [data, msg.packed]);
});
