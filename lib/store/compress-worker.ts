// Worker thread body of the compression pool. A batch arrives as one transferred buffer
// plus views of shared memory (see CompressJob), and leaves as one transferred buffer:
// structured-cloning many small views would copy their (often much larger) backing
// buffers one by one.
import { parentPort, workerData } from 'node:worker_threads';
import { Compressor } from 'zstd-napi';
import type { CompressJob, CompressResult } from './compression.js';

const compressor = new Compressor();
compressor.setParameters({ compressionLevel: (workerData as { level: number }).level });

parentPort!.on('message', (msg: CompressJob) => {
  const packed = Buffer.from(msg.packed);
  const parts: Buffer[] = [];
  const lengths: number[] = [];
  let pos = 0;
  for (const item of msg.items) {
    let input: Uint8Array;
    if (typeof item === 'number') {
      input = packed.subarray(pos, pos + item);
      pos += item;
    } else {
      input = item;
    }
    const out = compressor.compress(input);
    parts.push(out);
    lengths.push(out.length);
  }
  const data = new Uint8Array(lengths.reduce((a, b) => a + b, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.length;
  }
  const result: CompressResult = { job: msg.job, data: data.buffer, lengths };
  parentPort!.postMessage(result, [data.buffer]);
});
