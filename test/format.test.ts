// On-disk formats: round trips, and rejection of damaged bytes with a typed error.
import t from 'tap';
import { BinaryWriter } from '../lib/format/binary.js';
import { BlobHasher } from '../lib/format/blob-id.js';
import { BlobType, Compression, PackedBlob, decodeBlobHeader, decodeFooter, decodeTrailer, encodeBlobHeader, encodeTrailer, PACK_FOOTER_BYTES } from '../lib/format/pack.js';
import { EntryKind, TreeEntry, decodeChunkList, decodeTreeNode, encodeChunkList, encodeLeaf, findChunk, paginate } from '../lib/format/tree.js';
import { decompressExact, zstdDeclaredSize } from '../lib/store/compression.js';
import { CorruptDataError } from '../lib/errors.js';
import { compress } from 'zstd-napi';

const hasher = new BlobHasher(Buffer.alloc(192, 7));

function entry(name: string, extra: Partial<TreeEntry> = {}): TreeEntry {
  return {
    name: Buffer.from(name), kind: EntryKind.File, mode: 0o644, uid: 1000, gid: 1000, size: 0, allocated: 0,
    mtimeNs: 1_700_000_000_123_456_789n, ctimeNs: 1n, inode: 42n, device: 1, nlink: 1, rdev: 0, since: 1,
    content: encodeChunkList([]), ...extra,
  };
}

t.test('pack trailer round trip and damage', async (t) => {
  const blobs: PackedBlob[] = [0, 1, 2].map((i) => ({
    id: hasher.id(Buffer.from(`blob ${i}`)), type: BlobType.Data, compression: Compression.Zstd,
    offset: 16 + i * 100, storedLength: 60, rawLength: 70,
  }));
  const trailer = encodeTrailer(blobs);
  const packSize = 16 + 300 + trailer.length;
  const footer = decodeFooter(trailer.subarray(trailer.length - PACK_FOOTER_BYTES), packSize, 'p');
  const entries = trailer.subarray(0, footer.trailerBytes);
  t.same(decodeTrailer(entries, footer, packSize, 'p'), blobs);
  const flipped = Buffer.from(entries);
  flipped[5] ^= 1;
  t.throws(() => decodeTrailer(flipped, footer, packSize, 'p'), CorruptDataError, 'a flipped bit fails the checksum');
  t.throws(() => decodeFooter(Buffer.alloc(PACK_FOOTER_BYTES), packSize, 'p'), CorruptDataError, 'missing trailer magic');
  const header = encodeBlobHeader(blobs[0]!);
  t.same(decodeBlobHeader(header, 16, 'p').id, blobs[0]!.id);
  header[3] ^= 0x10;
  t.throws(() => decodeBlobHeader(header, 16, 'p'), CorruptDataError, 'blob header checksum');
});

t.test('tree entries and pages round trip, odd names included', async (t) => {
  const names = ['a', 'b\nc', Buffer.from([0x66, 0xff, 0xfe]).toString('latin1'), 'x'.repeat(255)];
  const entries = names
    .map((n) => entry(n, { name: Buffer.from(n, 'latin1'), xattrs: [[Buffer.from('user.k'), Buffer.from([0, 1, 2])]] }))
    .sort((a, b) => Buffer.compare(a.name, b.name));
  const node = decodeTreeNode(encodeLeaf(entries));
  t.equal(node.kind, 'leaf');
  if (node.kind === 'leaf') t.same(node.entries.map((e) => e.name), entries.map((e) => e.name));
  const unsorted = encodeLeaf([entries[1]!, entries[0]!]);
  t.throws(() => decodeTreeNode(unsorted), CorruptDataError, 'unsorted entries are rejected');
  for (const bad of ['..', '.', 'a/b']) {
    t.throws(() => decodeTreeNode(encodeLeaf([entry(bad)])), CorruptDataError, `name ${JSON.stringify(bad)} is rejected`);
  }
});

t.test('a big directory pages deterministically; one insertion changes one page', async (t) => {
  const make = (n: number): TreeEntry[] =>
    Array.from({ length: n }, (_, i) => entry(`msg-${String(i).padStart(7, '0')}.eml`)).sort((a, b) => Buffer.compare(a.name, b.name));
  const base = make(100_000);
  const pages = paginate(base);
  t.ok(pages.length > 100, `${pages.length} pages for 100,000 entries`);
  const ids = new Set(pages.map((p) => hasher.id(p.bytes).toString('hex')));
  const withOne = [...base, entry('msg-0050000.eml.new')].sort((a, b) => Buffer.compare(a.name, b.name));
  const pages2 = paginate(withOne);
  const changed = pages2.filter((p) => !ids.has(hasher.id(p.bytes).toString('hex')));
  t.ok(changed.length <= 2, `${changed.length} page(s) differ after inserting one entry`);
  t.equal(pages2.reduce((n, p) => n + p.count, 0), 100_001);
});

t.test('chunk lists: cumulative offsets, holes, binary search', async (t) => {
  const id = (s: string) => hasher.id(Buffer.from(s));
  const list = decodeChunkList(encodeChunkList([
    { offset: 0, length: 100, id: id('a') },
    { offset: 100, length: 50, id: id('b') },
    { offset: 1000, length: 10, id: id('c') }, // after a hole
  ]), 2000);
  t.equal(findChunk(list, 0), 0);
  t.equal(findChunk(list, 149), 1);
  t.equal(findChunk(list, 150), -1, 'in the hole');
  t.equal(findChunk(list, 1005), 2);
  t.equal(findChunk(list, 1010), -1, 'trailing hole');
  t.throws(() => decodeChunkList(encodeChunkList([{ offset: 0, length: 100, id: id('a') }]), 50), CorruptDataError, 'chunks past the size');
});

t.test('zstd frames: declared size checked before decompressing', async (t) => {
  const raw = Buffer.alloc(100_000, 'mail ');
  const frame = compress(raw);
  t.equal(zstdDeclaredSize(frame), raw.length);
  t.ok(decompressExact(frame, raw.length, 'x').equals(raw));
  t.throws(() => decompressExact(frame, raw.length - 1, 'x'), CorruptDataError, 'a size mismatch is refused');
  t.throws(() => decompressExact(Buffer.from('not zstd at all'), 10, 'x'), CorruptDataError, 'bad magic');
  const w = new BinaryWriter();
  w.u32(0xfd2fb528).u8(0xc0).u8(0).u64(2n ** 40n); // claims 1 TiB
  t.throws(() => decompressExact(w.finish(), 10, 'x'), CorruptDataError, 'a frame claiming 1 TiB is refused without allocating');
});

t.test('keyed ids: the same bytes under another secret get another id', async (t) => {
  const other = new BlobHasher(Buffer.alloc(192, 8));
  const data = Buffer.from('From: mallory\r\n\r\ncollide me');
  t.not(hasher.id(data).toString('hex'), other.id(data).toString('hex'));
  t.ok(hasher.matches(hasher.id(data), data));
});
