// Fuzzing the on-disk decoders: random bytes and mutations of valid encodings, fed to each
// decoder (and to what a reader does right after: a tree's chunk lists, a config's secret).
//
// The contract under test: a decoder given hostile bytes throws a SnapfsError (normally
// CorruptDataError) and nothing else, returns in bounded time, and allocates memory in
// proportion to its input, never to a count or length the input merely claims.
//
// The loop runs in a worker thread (fuzz-worker.ts) so that a decoder that hangs can be
// stopped and reported with the input that hung it: the worker copies every input into a
// SharedArrayBuffer before calling the decoder, and heartbeats; the parent terminates it
// when the heartbeat stops.

import { Worker } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import { compress } from 'zstd-napi';
import { BlobHasher, SECRET_BYTES } from '../../lib/format/blob-id.js';
import {
  BLOB_HEADER_BYTES,
  BlobType,
  Compression,
  PACK_FOOTER_BYTES,
  PACK_HEADER_BYTES,
  PackedBlob,
  decodeBlobHeader,
  decodeFooter,
  decodePackHeader,
  decodeTrailer,
  encodeBlobHeader,
  encodePackHeader,
  encodeTrailer,
} from '../../lib/format/pack.js';
import { EntryKind, TreeEntry, decodeChunkList, decodeTreeNode, encodeChunkList, encodeIndex, encodeLeaf, paginate } from '../../lib/format/tree.js';
import { SnapshotRecord, decodeSnapshot, encodeSnapshot, publishedAtNs } from '../../lib/format/snapshot.js';
import { RepoConfig, decodeConfig, encodeConfig } from '../../lib/format/config.js';
import { checksum64, hash32 } from '../../lib/format/blob-id.js';
import { decompressExact } from '../../lib/store/compression.js';
import { decodeStoredBlob } from '../../lib/store/blob-store.js';
import { scanBlobs } from '../../lib/ops/repair-index.js';
import { XorShift32 } from './tree-gen.js';
import { SnapfsError } from '../../lib/errors.js';

export interface FuzzTarget {
  name: string;
  /** Valid encodings to mutate. */
  seeds: Buffer[];
  /** Decodes `input` the way snapfs would; throws what the decoder throws. */
  run(input: Buffer, rng: XorShift32): void;
  /** Repairs checksums after a mutation, so that the mutation reaches the parsing behind them. */
  fixup?(input: Buffer): Buffer;
  /** Structure-aware mutations (JSON documents). */
  mutate?(seed: Buffer, rng: XorShift32): Buffer;
}

// One fixed secret: the fuzz is about parsing, and a fixed key keeps runs reproducible.
const SECRET = Buffer.alloc(SECRET_BYTES);
for (let i = 0; i < SECRET_BYTES; i++) SECRET[i] = (i * 131 + 7) & 0xff;
export const fuzzHasher = new BlobHasher(SECRET);

function entry(name: string | Buffer, extra: Partial<TreeEntry> = {}): TreeEntry {
  return {
    name: typeof name === 'string' ? Buffer.from(name) : name, kind: EntryKind.File, mode: 0o644, uid: 1000, gid: 1000, size: 0, allocated: 0,
    mtimeNs: 1_700_000_000_123_456_789n, ctimeNs: 1_700_000_000_000_000_001n, inode: 42n, device: 2049, nlink: 1, rdev: 0, since: 3,
    content: encodeChunkList([]), ...extra,
  };
}

function sortEntries(list: TreeEntry[]): TreeEntry[] {
  return list.sort((a, b) => Buffer.compare(a.name, b.name));
}

function chunkListSeed(n: number, rng: XorShift32): { list: Buffer; size: number } {
  const chunks = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    at += i % 3 === 0 ? rng.next() % 5000 : 0; // some holes
    const length = 1 + (rng.next() % 200_000);
    chunks.push({ offset: at, length, id: fuzzHasher.id(Buffer.from(`chunk ${i}`)) });
    at += length;
  }
  return { list: encodeChunkList(chunks), size: at + (rng.next() % 100) };
}

function treeSeeds(rng: XorShift32): Buffer[] {
  const subtree = fuzzHasher.id(Buffer.from('subtree'));
  const leaf = sortEntries([
    entry('file', { size: 300_000, content: chunkListSeed(3, rng).list }),
    entry('dir', { kind: EntryKind.Directory, mode: 0o755, content: undefined, subtree, nlink: 3 }),
    entry('link', { kind: EntryKind.Symlink, mode: 0o777, content: undefined, target: Buffer.from('../target/x'), size: 11 }),
    entry(Buffer.from([0x66, 0xff, 0x0a, 0x01]), { xattrs: [[Buffer.from('user.a'), Buffer.from([0, 1, 2, 3])], [Buffer.from('user.b'), Buffer.alloc(0)]] }),
    entry('dev', { kind: EntryKind.CharDevice, content: undefined, rdev: 0x0103 }),
    entry('fifo', { kind: EntryKind.Fifo, content: undefined }),
    entry('n'.repeat(255), { size: 10, content: chunkListSeed(1, rng).list, nlink: 2 }),
  ]);
  const many = sortEntries(Array.from({ length: 400 }, (_, i) => entry(`msg-${String(i).padStart(6, '0')}.eml`, { size: 0 })));
  const pages = paginate(many);
  const index = encodeIndex(pages.map((p, i) => ({ firstName: p.firstName, count: p.count, id: fuzzHasher.id(Buffer.from(`page ${i}`)) })));
  return [encodeLeaf(leaf), encodeLeaf([]), pages[0]!.bytes, index, encodeIndex([])];
}

function snapshotSeed(): SnapshotRecord {
  return {
    version: 1, id: 'a'.repeat(32), source: 'mail/imap', time: '2026-11-28T02:00:00.000Z', name: '2026-11-28_2',
    root: 'b'.repeat(32), parent: 'c'.repeat(32), generation: 7, generations: { '6': '1790000000000000000', '7': '1790000100000000000' },
    rootMeta: { mode: 0o755, uid: 0, gid: 0, mtimeNs: '1790000000000000000' }, hostname: 'backup1', paths: ['/var/spool/imap'],
    excludes: ['*.lock'], partial: false,
    stats: { files: 10, directories: 2, otherEntries: 0, filesNew: 1, filesChanged: 2, filesUnchanged: 7, filesOpened: 3, filesFailed: 0, bytesTotal: 12345, bytesRead: 100, blobsAdded: 3, dataBlobsAdded: 2, bytesAddedRaw: 100, bytesAddedStored: 80, durationMs: 12 },
  };
}

function configSeed(): RepoConfig {
  return {
    format: 'snapfs', version: 1, id: 'd'.repeat(32), createdAt: '2026-11-28T00:00:00.000Z',
    chunker: { minSize: 16384, avgSize: 65536, maxSize: 262144, gearSeed: '0123456789abcdef' },
    hashSecret: SECRET.toString('hex'), packTargetBytes: 1048576, compressionLevel: 3,
  };
}

/** A pack file in memory: header, blobs (some compressed), trailer. */
function packSeed(rng: XorShift32, blobs: number): Buffer {
  const parts: Buffer[] = [encodePackHeader()];
  const list: PackedBlob[] = [];
  let offset = PACK_HEADER_BYTES;
  for (let i = 0; i < blobs; i++) {
    const raw = i % 2 === 0 ? Buffer.from(`text blob ${i} `.repeat(50 + (rng.next() % 200))) : rng.bytes(1 + (rng.next() % 3000));
    const z = compress(raw);
    const zstd = z.length < raw.length;
    const stored = zstd ? z : raw;
    const b = { id: fuzzHasher.id(raw), type: i % 3 === 0 ? BlobType.Tree : BlobType.Data, compression: zstd ? Compression.Zstd : Compression.None, rawLength: raw.length, storedLength: stored.length };
    parts.push(encodeBlobHeader(b), stored);
    list.push({ ...b, offset });
    offset += BLOB_HEADER_BYTES + stored.length;
  }
  parts.push(encodeTrailer(list));
  return Buffer.concat(parts);
}

/** The decoding that readPackTrailer does on a file, on bytes in memory; then every blob it lists. */
function decodePack(data: Buffer): void {
  const what = 'fuzz pack';
  if (data.length < PACK_HEADER_BYTES + PACK_FOOTER_BYTES) throw new RangeErrorLike();
  decodePackHeader(data.subarray(0, PACK_HEADER_BYTES), what);
  const footer = decodeFooter(data.subarray(data.length - PACK_FOOTER_BYTES), data.length, what);
  const entries = data.subarray(data.length - PACK_FOOTER_BYTES - footer.trailerBytes, data.length - PACK_FOOTER_BYTES);
  const blobs = decodeTrailer(entries, footer, data.length, what);
  for (const b of blobs) {
    const stored = data.subarray(b.offset, b.offset + BLOB_HEADER_BYTES + b.storedLength);
    decodeStoredBlob(fuzzHasher, b.id, { ...b, pack: Buffer.alloc(16) }, stored, b.type);
  }
}

/** Marker for "too short to be a pack" (the file reader says so before decoding). */
class RangeErrorLike extends Error {
  readonly expected = true;
}

/** Rewrites the trailer checksum and every plausible blob header checksum of a pack. */
function fixPack(data: Buffer): Buffer {
  const out = Buffer.from(data);
  if (out.length >= PACK_HEADER_BYTES + PACK_FOOTER_BYTES) {
    const f = out.length - PACK_FOOTER_BYTES;
    const trailerBytes = out.readUInt32LE(f + 4);
    if (trailerBytes <= f) out.writeBigUInt64LE(checksum64(out.subarray(f - trailerBytes, f)), f + 8);
  }
  return out;
}

function fixBlobHeader(data: Buffer): Buffer {
  const out = Buffer.from(data);
  if (out.length >= BLOB_HEADER_BYTES) out.writeUInt32LE(hash32(out.subarray(0, BLOB_HEADER_BYTES - 4)), BLOB_HEADER_BYTES - 4);
  return out;
}

// --- JSON-aware mutation -----------------------------------------------------------

function randomJsonValue(rng: XorShift32, depth = 0): unknown {
  switch (rng.next() % 14) {
    case 0: return null;
    case 1: return true;
    case 2: return -1;
    case 3: return 2 ** 53 + 2;
    case 4: return 1e308;
    case 5: return 0.5;
    case 6: return '';
    case 7: return 'x'.repeat(rng.next() % 5000);
    case 8: return '../../etc';
    case 9: return '1'.repeat(1 + (rng.next() % 400));
    case 10: return depth < 3 ? [randomJsonValue(rng, depth + 1), randomJsonValue(rng, depth + 1)] : [];
    case 11: return depth < 3 ? { a: randomJsonValue(rng, depth + 1), __proto__x: 1, constructor: randomJsonValue(rng, depth + 1) } : {};
    case 12: return 'ffffffffffffffffffffffffffffffff';
    default: return rng.next() % 100000;
  }
}

function mutateJson(seed: Buffer, rng: XorShift32): Buffer {
  const doc = JSON.parse(seed.toString('utf8')) as Record<string, unknown>;
  const edits = 1 + (rng.next() % 3);
  for (let k = 0; k < edits; k++) {
    // Walk to a random object inside the document, then replace, delete or add a key.
    let obj: Record<string, unknown> = doc;
    for (let d = 0; d < 3; d++) {
      const keys = Object.keys(obj).filter((key) => typeof obj[key] === 'object' && obj[key] !== null);
      if (keys.length === 0 || rng.next() % 2 === 0) break;
      obj = obj[keys[rng.next() % keys.length]!] as Record<string, unknown>;
    }
    const keys = Object.keys(obj);
    const op = rng.next() % 4;
    if (op === 0 && keys.length) delete obj[keys[rng.next() % keys.length]!];
    else if (op === 1) obj[`extra${rng.next() % 5}`] = randomJsonValue(rng);
    else if (keys.length) obj[keys[rng.next() % keys.length]!] = randomJsonValue(rng);
  }
  const text = JSON.stringify(doc);
  // Sometimes the document itself is replaced by another JSON type.
  if (rng.next() % 50 === 0) return Buffer.from(JSON.stringify(randomJsonValue(rng)));
  return Buffer.from(text);
}

// --- targets -------------------------------------------------------------------------

export function fuzzTargets(): FuzzTarget[] {
  const rng = new XorShift32(1234);
  const frames = [Buffer.from('hello hello hello hello '.repeat(300)), rng.bytes(5000), Buffer.alloc(100_000), Buffer.from('x')].map((raw) => ({ raw, frame: compress(raw) }));
  const packs = [packSeed(rng, 1), packSeed(rng, 6), packSeed(rng, 20)];
  const header = encodeBlobHeader({ id: fuzzHasher.id(Buffer.from('x')), type: BlobType.Data, compression: Compression.Zstd, rawLength: 1000, storedLength: 20 });
  const lists = [chunkListSeed(1, rng), chunkListSeed(5, rng), chunkListSeed(200, rng), { list: encodeChunkList([]), size: 0 }];
  return [
    {
      name: 'pack header',
      seeds: [encodePackHeader()],
      run: (input) => decodePackHeader(input, 'fuzz'),
    },
    {
      name: 'blob header',
      seeds: [header],
      run: (input) => void decodeBlobHeader(input, 0, 'fuzz'),
      fixup: fixBlobHeader,
    },
    {
      name: 'pack footer and trailer',
      seeds: packs,
      run: (input) => {
        try {
          decodePack(input);
        } catch (err) {
          if (!(err instanceof RangeErrorLike)) throw err;
        }
      },
      fixup: fixPack,
    },
    {
      name: 'pack scan without trailer (repair index)',
      seeds: packs.map((p) => p.subarray(0, p.length - 10)),
      run: (input) => void scanBlobs(input, fuzzHasher, 'fuzz'),
    },
    {
      name: 'stored blob (header, zstd, keyed id)',
      seeds: packs.map((p) => p.subarray(PACK_HEADER_BYTES)),
      run: (input) => {
        if (input.length < BLOB_HEADER_BYTES) return;
        const h = decodeBlobHeader(input.subarray(0, BLOB_HEADER_BYTES), 0, 'fuzz');
        const stored = input.subarray(0, BLOB_HEADER_BYTES + h.storedLength);
        decodeStoredBlob(fuzzHasher, h.id, { ...h, offset: PACK_HEADER_BYTES, pack: Buffer.alloc(16) }, stored, h.type);
      },
      fixup: fixBlobHeader,
    },
    {
      name: 'zstd frame',
      seeds: frames.map((f) => f.frame),
      run: (input, r) => {
        const f = frames[r.next() % frames.length]!;
        decompressExact(input, r.next() % 4 === 0 ? r.next() % 200_000 : f.raw.length, 'fuzz');
      },
    },
    {
      name: 'tree node (and its chunk lists)',
      seeds: treeSeeds(rng),
      run: (input) => {
        const node = decodeTreeNode(input);
        if (node.kind === 'leaf') for (const e of node.entries) if (e.content) decodeChunkList(e.content, e.size);
      },
    },
    {
      name: 'chunk list',
      seeds: lists.map((l) => l.list),
      run: (input, r) => void decodeChunkList(input, r.next() % 3 === 0 ? r.next() * 1000 : lists[r.next() % lists.length]!.size),
    },
    {
      name: 'snapshot record',
      seeds: [encodeSnapshot(snapshotSeed()), encodeSnapshot({ ...snapshotSeed(), parent: null, generation: 1, generations: { '1': '5' } })],
      run: (input) => {
        const rec = decodeSnapshot(input, 'fuzz');
        publishedAtNs(rec); // what sorting and the mount do with a record first
        void new Date(rec.time).toISOString();
      },
      mutate: mutateJson,
    },
    {
      name: 'config',
      seeds: [encodeConfig(configSeed())],
      run: (input) => {
        const c = decodeConfig(input, 'fuzz');
        new BlobHasher(Buffer.from(c.hashSecret, 'hex')); // what opening a repository does next
        void BigInt('0x' + c.chunker.gearSeed);
      },
      mutate: mutateJson,
    },
  ];
}

// --- mutation ------------------------------------------------------------------------

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x2f, 0x2e, 0x0a];

export function mutate(seed: Buffer, rng: XorShift32): Buffer {
  let b = Buffer.from(seed);
  const rounds = 1 + (rng.next() % 4);
  for (let k = 0; k < rounds; k++) {
    const pos = b.length ? rng.next() % b.length : 0;
    switch (rng.next() % 10) {
      case 0: // flip a bit
        if (b.length) b[pos]! ^= 1 << (rng.next() % 8);
        break;
      case 1: // an interesting byte
        if (b.length) b[pos] = INTERESTING[rng.next() % INTERESTING.length]!;
        break;
      case 2: // a big varint or u32 (counts and lengths)
        if (b.length >= 4) {
          const v = [0xffffffff, 0x7fffffff, 0x10000000, 0x00ffffff, 0x80000000][rng.next() % 5]!;
          b.writeUInt32LE(v, Math.min(pos, b.length - 4));
        }
        break;
      case 3: // truncate
        b = b.subarray(0, rng.next() % (b.length + 1));
        break;
      case 4: // extend with random bytes
        b = Buffer.concat([b, rng.bytes(rng.next() % 64)]);
        break;
      case 5: // insert
        b = Buffer.concat([b.subarray(0, pos), rng.bytes(1 + (rng.next() % 16)), b.subarray(pos)]);
        break;
      case 6: // delete a range
        b = Buffer.concat([b.subarray(0, pos), b.subarray(Math.min(b.length, pos + 1 + (rng.next() % 16)))]);
        break;
      case 7: // duplicate a range somewhere else
        if (b.length > 2) {
          const from = rng.next() % b.length;
          const len = 1 + (rng.next() % Math.min(64, b.length - from));
          b = Buffer.concat([b.subarray(0, pos), b.subarray(from, from + len), b.subarray(pos)]);
        }
        break;
      case 8: // a varint continuation run (0x80 0x80 ... )
        if (b.length) b.fill(0x80 | (rng.next() & 0x7f), pos, Math.min(b.length, pos + 1 + (rng.next() % 10)));
        break;
      default: // random byte
        if (b.length) b[pos] = rng.next() & 0xff;
    }
  }
  return b;
}

// --- running ---------------------------------------------------------------------------

export interface FuzzFailure {
  target: string;
  kind: 'wrong error type' | 'slow' | 'memory' | 'hang';
  message: string;
  inputHex: string;
}

export interface FuzzReport {
  target: string;
  runs: number;
  rejected: number;
  accepted: number;
  slowestMs: number;
  maxAllocBytes: number;
  failures: FuzzFailure[];
}

/** Fuzzes one target for `ms` in a worker; a hang is caught by the heartbeat. */
export function fuzzInWorker(target: string, ms: number, seed = randomBytes(4).readUInt32LE(0)): Promise<FuzzReport & { seed: number }> {
  return new Promise((resolve) => {
    const shared = new SharedArrayBuffer(4 + MAX_INPUT_BYTES);
    const worker = new Worker(new URL('./fuzz-worker.js', import.meta.url), { workerData: { target, ms, seed, shared }, execArgv: [] });
    let last = Date.now();
    let finished = false;
    const failures: FuzzFailure[] = [];
    const done = (report: FuzzReport): void => {
      if (finished) return;
      finished = true;
      clearInterval(watchdog);
      resolve({ ...report, failures: [...failures, ...report.failures], seed });
    };
    const watchdog = setInterval(() => {
      if (Date.now() - last < HANG_MS) return;
      const len = new Uint32Array(shared, 0, 1)[0]!;
      const input = Buffer.from(new Uint8Array(shared, 4, len));
      failures.push({ target, kind: 'hang', message: `no progress for ${HANG_MS} ms`, inputHex: input.toString('hex') });
      void worker.terminate();
      done({ target, runs: 0, rejected: 0, accepted: 0, slowestMs: HANG_MS, maxAllocBytes: 0, failures: [] });
    }, 500);
    worker.on('message', (m: { alive?: true; report?: FuzzReport }) => {
      last = Date.now();
      if (m.report) {
        void worker.terminate();
        done(m.report);
      }
    });
    worker.on('error', (err) => {
      failures.push({ target, kind: 'wrong error type', message: `worker died: ${err.stack ?? err.message}`, inputHex: '' });
      done({ target, runs: 0, rejected: 0, accepted: 0, slowestMs: 0, maxAllocBytes: 0, failures: [] });
    });
    worker.on('exit', (code) => {
      if (!finished) {
        const len = new Uint32Array(shared, 0, 1)[0]!;
        failures.push({ target, kind: 'hang', message: `worker exited with code ${code}`, inputHex: Buffer.from(new Uint8Array(shared, 4, len)).toString('hex') });
        done({ target, runs: 0, rejected: 0, accepted: 0, slowestMs: 0, maxAllocBytes: 0, failures: [] });
      }
    });
  });
}

export const MAX_INPUT_BYTES = 1 << 20;
const HANG_MS = 10_000;
/** A single decode may not take longer than this (the biggest seed decodes in well under 1 ms; the margin is for GC pauses on a loaded machine). */
export const SLOW_MS = 2000;
/** Memory a decode may allocate beyond this multiple of its input size is "unbounded". */
export const ALLOC_FACTOR = 64;
export const ALLOC_SLACK = 4 * 1024 * 1024;

/** The loop itself; run by fuzz-worker.ts. */
export function fuzzLoop(targetName: string, ms: number, seed: number, shared: SharedArrayBuffer | undefined, heartbeat: () => void): FuzzReport {
  const target = fuzzTargets().find((t) => t.name === targetName);
  if (!target) throw new Error(`no fuzz target ${targetName}`);
  const rng = new XorShift32(seed);
  const report: FuzzReport = { target: targetName, runs: 0, rejected: 0, accepted: 0, slowestMs: 0, maxAllocBytes: 0, failures: [] };
  const seen = new Set<string>();
  const fail = (kind: FuzzFailure['kind'], message: string, input: Buffer): void => {
    const key = `${kind}:${message.replace(/\d+/g, 'N')}`;
    if (seen.has(key) || report.failures.length >= 20) return;
    seen.add(key);
    report.failures.push({ target: targetName, kind, message, inputHex: input.subarray(0, 4096).toString('hex') });
  };
  const lenView = shared ? new Uint32Array(shared, 0, 1) : undefined;
  const bytesView = shared ? new Uint8Array(shared, 4) : undefined;
  const end = Date.now() + ms;
  let lastBeat = Date.now();
  while (Date.now() < end) {
    let input: Buffer;
    const pick = rng.next() % 20;
    const s = target.seeds[rng.next() % target.seeds.length]!;
    if (pick === 0) input = rng.bytes(rng.next() % 256);
    else if (pick === 1) input = rng.bytes(rng.next() % 8192);
    else if (pick < 6 && target.mutate) input = target.mutate(s, rng);
    else {
      input = mutate(s, rng);
      if (target.fixup && rng.next() % 2 === 0) input = target.fixup(input);
    }
    if (input.length > MAX_INPUT_BYTES) input = input.subarray(0, MAX_INPUT_BYTES);
    if (lenView && bytesView) {
      bytesView.set(input);
      lenView[0] = input.length;
    }
    const before = process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    try {
      target.run(input, rng);
      report.accepted++;
    } catch (err) {
      report.rejected++;
      if (!(err instanceof SnapfsError)) fail('wrong error type', `${(err as Error)?.constructor?.name}: ${(err as Error)?.message ?? String(err)}\n${(err as Error)?.stack ?? ''}`, input);
    }
    const took = performance.now() - t0;
    const alloc = process.memoryUsage().arrayBuffers - before;
    report.runs++;
    if (took > report.slowestMs) report.slowestMs = took;
    if (alloc > report.maxAllocBytes) report.maxAllocBytes = alloc;
    if (took > SLOW_MS) fail('slow', `${took.toFixed(0)} ms for ${input.length} bytes`, input);
    if (alloc > ALLOC_SLACK + ALLOC_FACTOR * input.length) fail('memory', `${alloc} bytes allocated for ${input.length} bytes of input`, input);
    if (Date.now() - lastBeat > 200) {
      lastBeat = Date.now();
      heartbeat();
    }
  }
  return report;
}
