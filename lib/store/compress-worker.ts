// Worker thread body of the compression pool. A batch arrives as one transferred buffer
// plus item lengths, and leaves the same way: structured-cloning many small views would
// copy their (often much larger) backing buffers one by one.
import { parentPort, workerData } from 'node:worker_threads';
import { Compressor } from 'zstd-napi';

const compressor = new Compressor();
compressor.setParameters({ compressionLevel: (workerData as { level: number }).level });

parentPort!.on('message', (msg: { job: number; data: ArrayBuffer; lengths: number[] }) => {
  const input = Buffer.from(msg.data);
  const parts: Buffer[] = [];
  const lengths: number[] = [];
  let pos = 0;
  for (const len of msg.lengths) {
    const out = compressor.compress(input.subarray(pos, pos + len));
    parts.push(out);
    lengths.push(out.length);
    pos += len;
  }
  const packed = new Uint8Array(lengths.reduce((a, b) => a + b, 0));
  let at = 0;
  for (const p of parts) {
    packed.set(p, at);
    at += p.length;
  }
  parentPort!.postMessage({ job: msg.job, data: packed.buffer, lengths }, [packed.buffer]);
});
