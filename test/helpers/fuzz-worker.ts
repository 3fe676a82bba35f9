// Worker side of fuzz.ts: runs one target's loop and posts heartbeats and the report.
import { parentPort, workerData } from 'node:worker_threads';
import { fuzzLoop } from './fuzz.js';

const { target, ms, seed, shared } = workerData as { target: string; ms: number; seed: number; shared: SharedArrayBuffer };
const report = fuzzLoop(target, ms, seed, shared, () => parentPort!.postMessage({ alive: true }));
parentPort!.postMessage({ report });
