// Worker thread body of the compression pool: compresses batches with zstd-napi.
import { parentPort, workerData } from 'node:worker_threads';
import { Compressor } from 'zstd-napi';

const compressor = new Compressor();
compressor.setParameters({ compressionLevel: (workerData as { level: number }).level });

parentPort!.on('message', (msg: { job: number; items: Uint8Array[] }) => {
  const out = msg.items.map((item) => compressor.compress(item));
  parentPort!.postMessage({ job: msg.job, out });
});
