// zstd compression on both cores: a small worker_threads pool fed in batches (one message
// per batch, not per blob, so a spool of 4 KiB mails does not drown in message overhead),
// and bounded-memory decompression that refuses frames claiming more than expected.
// Data in shared memory (the chunks of large files) reaches the workers without a copy;
// anything else is copied into one transferred buffer per batch. Both the batch buffers and
// the workers' output buffers travel back and forth and are reused (see CompressedFrame).

import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { zstd as binding } from '../platform/zstd.js';
import { CorruptDataError } from '../errors.js';
import { zstdDecompress } from '../platform/native.js';
import { BufferPool } from '../util/buffer-pool.js';

/**
 * A compressed frame: a view of an output buffer that carries the frames of a whole batch.
 * `release` says its bytes have been copied away; when every frame of the batch is released
 * the buffer goes back to a worker, which detaches it here: a view used after `release` is
 * empty, never someone else's bytes.
 */
export interface CompressedFrame {
  readonly bytes: Buffer;
  release(): void;
}

interface Pending {
  data: Uint8Array;
  resolve: (f: CompressedFrame) => void;
  reject: (e: unknown) => void;
}

/**
 * A batch for a worker: `items` in order, each either a length (the next bytes of `packed`)
 * or a view of shared memory, which a message shares rather than copies.
 */
export interface CompressJob {
  job: number;
  packed: ArrayBuffer;
  items: Array<number | Uint8Array>;
  /** Output buffers of earlier batches, all of whose frames were released: to write into again. */
  spareOutputs: ArrayBuffer[];
}

export interface CompressWorkerData {
  level: number;
  /** Size of the output buffers (a batch's bound is at most this, but for a single huge item). */
  outputBytes: number;
  /** Idle output buffers a worker keeps, in bytes. */
  spareOutputBytes: number;
}

/** The compressed items of a job, one after the other in `data`; `packed` comes back for reuse. */
export interface CompressResult {
  job: number;
  data: ArrayBuffer;
  lengths: number[];
  packed: ArrayBuffer;
}

function isShared(data: Uint8Array): boolean {
  return data.buffer instanceof SharedArrayBuffer;
}

const BATCH_BYTES = 4 * 1024 * 1024;
const BATCH_ITEMS = 512;
/**
 * Batch and output buffers all have one size, so that any idle one fits the next batch: a
 * batch holds at most BATCH_BYTES (or a single larger item, whose buffers are not kept), and
 * its frames at most zstd's bound for that, which exceeds the input by under 64 bytes an item
 * plus 1/256.
 */
const OUTPUT_BYTES = BATCH_BYTES + (BATCH_BYTES >> 8) + 64 * BATCH_ITEMS;
/** Idle batch and output buffers kept, per worker: two batches' worth each way (the pool rounds sizes up). */
const SPARE_BYTES_PER_WORKER = 3 * OUTPUT_BYTES;

export class CompressionPool {
  private readonly workers: Worker[] = [];
  private readonly exits: Promise<unknown>[] = [];
  private readonly idle: Worker[] = [];
  /**
   * Waiting items are queue[head..]; a head index, since shift() is O(n). Dispatched slots
   * are cleared: while the queue never empties (a large file keeps it fed) they would
   * otherwise keep every chunk compressed so far alive.
   */
  private queue: Array<Pending | undefined> = [];
  private head = 0;
  private readonly jobs = new Map<number, Pending[]>();
  private nextJob = 1;
  private queuedBytes = 0;
  private dispatchScheduled = false;
  private failure: unknown;
  /** close() was called: nothing more is dispatched, and workers stay referenced until they exit. */
  private closing = false;
  private readonly spareInputs: BufferPool;
  /** Released output buffers, handed to the next batches' workers. */
  private readonly spareOutputs: ArrayBuffer[] = [];

  constructor(
    private readonly level: number,
    private readonly size = Math.max(1, Math.min(4, availableParallelism())),
  ) {
    this.spareInputs = new BufferPool(size * SPARE_BYTES_PER_WORKER);
  }

  /**
   * Workers start with the first blob: a backup in which nothing changed compresses
   * nothing, and starting them (a Node.js isolate each) costs more than its whole walk.
   */
  private start(): void {
    for (let i = 0; i < this.size; i++) {
      const w = new Worker(new URL('./compress-worker.js', import.meta.url), {
        workerData: { level: this.level, outputBytes: OUTPUT_BYTES, spareOutputBytes: SPARE_BYTES_PER_WORKER } satisfies CompressWorkerData,
      });
      w.on('message', (msg: CompressResult) => this.finished(w, msg));
      w.on('error', (err) => this.fail(err));
      this.exits.push(new Promise((resolve) => w.once('exit', resolve)));
      w.unref();
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  compress(data: Uint8Array): Promise<CompressedFrame> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(poolClosed());
    if (this.workers.length === 0) this.start();
    return new Promise((resolve, reject) => {
      this.queue.push({ data, resolve, reject });
      this.queuedBytes += data.length;
      this.schedule();
    });
  }

  /**
   * A full batch goes at once; a partial one waits for the end of this event-loop turn,
   * so that the small blobs of many files travel in one message.
   */
  private schedule(): void {
    const waiting = this.queue.length - this.head;
    if (this.queuedBytes >= BATCH_BYTES || waiting >= BATCH_ITEMS) this.dispatch();
    else if (!this.dispatchScheduled && waiting > 0) {
      this.dispatchScheduled = true;
      setImmediate(() => {
        this.dispatchScheduled = false;
        this.dispatch();
      });
    }
  }

  private dispatch(): void {
    if (this.closing) return;
    while (this.idle.length > 0 && this.head < this.queue.length) {
      const batch: Pending[] = [];
      let bytes = 0;
      while (this.head < this.queue.length && batch.length < BATCH_ITEMS) {
        const p = this.queue[this.head]!;
        if (batch.length > 0 && bytes + p.data.length > BATCH_BYTES) break;
        this.queue[this.head++] = undefined;
        bytes += p.data.length;
        this.queuedBytes -= p.data.length;
        batch.push(p);
      }
      const worker = this.idle.pop()!;
      const job = this.nextJob++;
      this.jobs.set(job, batch);
      worker.ref();
      let copied = 0;
      for (const p of batch) if (!isShared(p.data)) copied += p.data.length;
      const packed = this.spareInputs.take(Math.max(copied, BATCH_BYTES)).subarray(0, copied);
      let at = 0;
      const items = batch.map((p) => {
        if (isShared(p.data)) return p.data;
        packed.set(p.data, at);
        at += p.data.length;
        return p.data.length;
      });
      // One batch needs one output buffer: one each, so that every worker gets its share.
      const spareOutputs = this.spareOutputs.splice(0, 1);
      const msg: CompressJob = { job, packed: packed.buffer as ArrayBuffer, items, spareOutputs };
      worker.postMessage(msg, [msg.packed, ...spareOutputs]);
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  private finished(worker: Worker, msg: CompressResult): void {
    const batch = this.jobs.get(msg.job)!;
    this.jobs.delete(msg.job);
    this.spareInputs.give(Buffer.from(msg.packed));
    let unreleased = batch.length;
    const releaseOne = (): void => {
      if (--unreleased > 0) return;
      // Bounded: each dispatch takes one back to a worker; beyond the bound they are dropped.
      if (this.spareOutputs.length < this.size * 2) this.spareOutputs.push(msg.data);
    };
    let at = 0;
    batch.forEach((p, i) => {
      const len = msg.lengths[i]!;
      let released = false;
      p.resolve({
        bytes: Buffer.from(msg.data, at, len),
        release: () => {
          if (released) return;
          released = true;
          releaseOne();
        },
      });
      at += len;
    });
    // A closing pool keeps its workers referenced: close() waits for them to exit, and an
    // unreferenced worker would let the event loop run dry (the process ended, exit code
    // 0, in the middle of a failed backup's cleanup).
    if (this.closing) return;
    worker.unref();
    this.idle.push(worker);
    this.schedule();
  }

  private fail(err: unknown): void {
    this.failure = err;
    for (const batch of this.jobs.values()) batch.forEach((p) => p.reject(err));
    this.jobs.clear();
    this.rejectQueued(err);
  }

  /** Rejects every blob not yet dispatched and empties the queue. */
  private rejectQueued(err: unknown): void {
    this.queue.slice(this.head).forEach((p) => p!.reject(err));
    this.queue = [];
    this.head = 0;
    this.queuedBytes = 0;
  }

  /**
   * Workers are asked to stop, not terminated: a worker still loading zstd's addon when
   * terminated aborts the whole process (the addon's registration cannot throw into a
   * stopping thread: FATAL ERROR Error::ThrowAsJavaScriptException). The request is read
   * once the worker has loaded, after any batch before it.
   */
  async close(): Promise<void> {
    this.closing = true;
    // Blobs still queued belong to callers that gave up (a failed backup's other files).
    this.rejectQueued(poolClosed());
    for (const w of this.workers) {
      w.ref(); // the process waits for them to exit
      w.postMessage(null);
    }
    await Promise.all(this.exits);
  }
}

function poolClosed(): Error {
  return new Error('compression pool: closed');
}

const ZSTD_MAGIC = 0xfd2fb528;

/**
 * The content size a zstd frame header declares, or undefined when absent. Read before
 * decompressing so that a damaged or hostile frame cannot make us allocate gigabytes.
 */
export function zstdDeclaredSize(frame: Uint8Array): number | undefined {
  if (frame.length < 6) throw new CorruptDataError('zstd frame: truncated header');
  const view = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  if (view.readUInt32LE(0) !== ZSTD_MAGIC) throw new CorruptDataError('zstd frame: bad magic');
  const fhd = view[4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const dictFlag = fhd & 3;
  let pos = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag]!;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
  if (fcsBytes === 0) return undefined;
  if (pos + fcsBytes > view.length) throw new CorruptDataError('zstd frame: truncated header');
  switch (fcsBytes) {
    case 1:
      return view[pos]!;
    case 2:
      return view.readUInt16LE(pos) + 256;
    case 4:
      return view.readUInt32LE(pos);
    default: {
      const v = view.readBigUInt64LE(pos);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
  }
}

const dctx = new binding.DCtx();

/**
 * Decompresses a frame that must declare exactly `rawLength` bytes, into `into` (rawLength
 * bytes long) when given, else into a new buffer.
 */
export function decompressExact(frame: Uint8Array, rawLength: number, what: string, into?: Buffer): Buffer {
  const out = outputFor(frame, rawLength, what, into);
  let n: number;
  try {
    n = dctx.decompress(out, frame);
  } catch (err) {
    throw new CorruptDataError(`${what}: zstd decompression failed (${(err as Error).message})`, { cause: err });
  }
  return exactly(out, n, rawLength, what);
}

/** decompressExact on the thread pool: for big frames, which then decompress side by side. */
export async function decompressExactAsync(frame: Uint8Array, rawLength: number, what: string, into?: Buffer): Promise<Buffer> {
  const out = outputFor(frame, rawLength, what, into);
  let n: number;
  try {
    n = await zstdDecompress(frame, out);
  } catch (err) {
    throw new CorruptDataError(`${what}: zstd decompression failed (${(err as Error).message})`, { cause: err });
  }
  return exactly(out, n, rawLength, what);
}

/** The output buffer, once the frame's declared size is the expected one. */
function outputFor(frame: Uint8Array, rawLength: number, what: string, into?: Buffer): Buffer {
  let declared: number | undefined;
  try {
    declared = zstdDeclaredSize(frame);
  } catch (err) {
    throw new CorruptDataError(`${what}: ${(err as Error).message}`);
  }
  // snapfs always writes the content size; a frame without one is not ours.
  if (declared === undefined) throw new CorruptDataError(`${what}: zstd frame without content size`);
  if (declared !== rawLength) {
    throw new CorruptDataError(`${what}: zstd frame declares ${declared} bytes, expected ${rawLength}`);
  }
  const out = into ?? Buffer.allocUnsafe(rawLength);
  if (out.length !== rawLength) throw new Error(`decompressExact: output buffer of ${out.length} bytes for ${rawLength}`);
  return out;
}

function exactly(out: Buffer, n: number, rawLength: number, what: string): Buffer {
  if (n !== rawLength) throw new CorruptDataError(`${what}: decompressed to ${n} bytes, expected ${rawLength}`);
  return out;
}
