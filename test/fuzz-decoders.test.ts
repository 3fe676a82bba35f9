// Hostile bytes against every on-disk decoder: random input and mutations of valid
// encodings (with checksums repaired half the time, so mutations reach the parsing behind
// them). Each decoder must reject with a SnapfsError only, never take more than 2 s
// for one input, and never allocate more than 64x its input plus 4 MiB. A hang is caught by
// a heartbeat and reported with the input that caused it.
//
// CI runs each target for SNAPFS_FUZZ_MS (default 7 s, random seed, printed for replay);
// `node dist/test/soak/fuzz.js SECONDS [SEED]` runs the same for longer.
import t from 'tap';
import { fuzzInWorker, fuzzTargets } from './helpers/fuzz.js';
import { XorShift32 } from './helpers/tree-gen.js';
import { EntryKind, TreeEntry, decodeChunkList, decodeTreeNode, encodeChunkList, encodeLeaf, paginate, encodeIndex } from '../lib/format/tree.js';
import { BlobHasher } from '../lib/format/blob-id.js';

const ms = Number(process.env.SNAPFS_FUZZ_MS ?? 7000);
const fixedSeed = process.env.SNAPFS_FUZZ_SEED ? Number(process.env.SNAPFS_FUZZ_SEED) : undefined;

for (const target of fuzzTargets()) {
  t.test(`fuzz: ${target.name}`, async (t) => {
    const r = await fuzzInWorker(target.name, ms, fixedSeed);
    t.comment(`${r.runs} inputs (${r.rejected} rejected, ${r.accepted} accepted), slowest ${r.slowestMs.toFixed(1)} ms, ` +
      `largest allocation ${r.maxAllocBytes} bytes; seed ${r.seed} (SNAPFS_FUZZ_SEED=${r.seed} to replay)`);
    t.ok(r.runs > 100, `the fuzzer ran (${r.runs} inputs)`);
    for (const f of r.failures) t.fail(`${f.kind}: ${f.message}`, { input: f.inputHex });
    t.equal(r.failures.length, 0, 'only typed rejections, all fast and bounded');
  });
}

t.test('random valid trees round-trip exactly (names of any byte but / and NUL)', async (t) => {
  const rng = new XorShift32(fixedSeed ?? 77);
  const hasher = new BlobHasher(Buffer.alloc(192, 3));
  for (let round = 0; round < 200; round++) {
    const names = new Map<string, Buffer>();
    const n = 1 + (rng.next() % 60);
    while (names.size < n) {
      const len = 1 + (rng.next() % 255);
      const name = Buffer.alloc(len);
      for (let i = 0; i < len; i++) {
        let b = 1 + (rng.next() % 255);
        if (b === 0x2f) b = 0x30;
        name[i] = b;
      }
      if (name.equals(Buffer.from('.')) || name.equals(Buffer.from('..'))) continue;
      names.set(name.toString('latin1'), name);
    }
    const entries: TreeEntry[] = [...names.values()].sort(Buffer.compare).map((name, i) => {
      const kind = [EntryKind.File, EntryKind.Directory, EntryKind.Symlink, EntryKind.Fifo][i % 4]!;
      const size = rng.next() * 3;
      const e: TreeEntry = {
        name, kind, mode: rng.next() & 0o7777, uid: rng.next(), gid: rng.next(), size: kind === EntryKind.File ? size : 0, allocated: rng.next(),
        mtimeNs: BigInt(rng.next()) * 1_000_000_000n * (rng.next() % 2 ? 1n : -1n) + BigInt(rng.next() % 1_000_000_000), ctimeNs: BigInt(rng.next()), inode: BigInt(rng.next()) << 20n,
        device: rng.next(), nlink: 1 + (rng.next() % 5), rdev: rng.next() % 1000, since: rng.next() % 1000,
      };
      if (kind === EntryKind.File) e.content = encodeChunkList(size > 0 ? [{ offset: 0, length: Math.min(size, 0xffffffff), id: hasher.id(name) }] : []);
      if (kind === EntryKind.Directory) e.subtree = hasher.id(Buffer.concat([name, Buffer.from('/')]));
      if (kind === EntryKind.Symlink) e.target = Buffer.concat([Buffer.from('../'), name]);
      if (rng.next() % 3 === 0) e.xattrs = [[Buffer.from('user.x'), rng.bytes(rng.next() % 100)]];
      return e;
    });
    const node = decodeTreeNode(encodeLeaf(entries));
    if (node.kind !== 'leaf') throw new Error('leaf expected');
    t.same(node.entries, entries.map((e) => ({ ...e, xattrs: e.xattrs && e.xattrs.length ? e.xattrs : undefined })).map(stripUndefined), `round ${round}`, { diagnostic: false });
    for (const e of node.entries) if (e.content) decodeChunkList(e.content, e.size);
    const pages = paginate(entries);
    const index = decodeTreeNode(encodeIndex(pages.map((p) => ({ firstName: p.firstName, count: p.count, id: hasher.id(p.bytes) }))));
    t.equal(index.kind === 'index' ? index.total : -1, entries.length);
  }
});

function stripUndefined(e: TreeEntry): TreeEntry {
  const out = { ...e } as Record<string, unknown>;
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out as unknown as TreeEntry;
}
