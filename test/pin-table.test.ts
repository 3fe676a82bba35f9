// The compact table of nodes the kernel holds: the same answers as a plain Map through
// random adds and releases (index growth, backward-shift deletion, dense records, arena
// compaction and shrinking), and a few bytes per node.
import t from 'tap';
import { PinTable } from '../lib/read/pin-table.js';

/** xorshift: reproducible ids and paths. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

t.test('behaves like a Map of counted (snapshot, path) records', async (t) => {
  const next = rng(12345);
  const table = new PinTable();
  const model = new Map<bigint, { snap: number; path: string; count: number }>();
  const ids: bigint[] = [];
  let mismatches = 0;
  for (let step = 0; step < 200_000; step++) {
    const r = next() % 100;
    // Phases: mostly adds, then mostly releases, so the table grows, shrinks and compacts.
    const adding = step % 50_000 < 30_000 ? r < 70 : r < 20;
    if (adding || ids.length === 0) {
      // Some ids collide in their low half, some are small: probing has to compare both halves.
      const id = next() % 10 === 0 && ids.length ? (ids[next() % ids.length]! & 0xffffffffn) | (BigInt(next()) << 32n) : (BigInt(next()) << 32n) | BigInt(next() % 7 === 0 ? next() % 16 : next());
      const path = `dir${next() % 50}/name-${id.toString(36)}-${'x'.repeat(next() % 40)}`;
      const snap = next() % 5;
      const n = 1 + (next() % 3);
      const m = model.get(id);
      if (m) m.count += n;
      else {
        model.set(id, { snap, path, count: n });
        ids.push(id);
      }
      table.add(id, snap, Buffer.from(path), n);
    } else {
      const k = next() % ids.length;
      const id = ids[k]!;
      const m = model.get(id)!;
      const n = 1 + (next() % 2);
      const gone = table.release(id, n);
      m.count -= n;
      if (gone !== m.count <= 0) mismatches++;
      if (m.count <= 0) {
        model.delete(id);
        ids[k] = ids[ids.length - 1]!;
        ids.pop();
      }
    }
    if (step % 10_000 === 0) {
      for (const [id, m] of model) {
        const got = table.get(id);
        if (!got || got.snap !== m.snap || got.path.toString() !== m.path) mismatches++;
        // holdsAs compares in place: the recorded (snap, parent/name), and nothing else.
        const slash = m.path.indexOf('/');
        const parent = Buffer.from(m.path.slice(0, slash));
        const name = Buffer.from(m.path.slice(slash + 1));
        if (table.holdsAs(id, m.snap, [parent, name]) !== true) mismatches++;
        if (table.holdsAs(id, m.snap + 1, [parent, name]) !== false) mismatches++;
        if (table.holdsAs(id, m.snap, [parent, Buffer.from(m.path.slice(slash + 1) + 'y')]) !== false) mismatches++;
        if (table.holdsAs(id, m.snap, [Buffer.from('dir'), name]) !== false) mismatches++;
      }
      if (table.holdsAs(0xdeadbeefn, 0, [Buffer.alloc(0), Buffer.from('x')]) !== undefined) mismatches++;
    }
  }
  t.equal(mismatches, 0, 'every answer matched the model');
  t.equal(table.size, model.size, 'same number of nodes');
  for (const [id, m] of model) {
    const got = table.get(id);
    if (!got || got.snap !== m.snap || got.path.toString() !== m.path) mismatches++;
  }
  t.equal(mismatches, 0, 'every remaining record is intact');
  t.notOk(table.has(0xdeadbeefn), 'an id never added is unknown');
  t.equal(table.release(0xdeadbeefn, 1), true, 'releasing an unknown id: nothing held');
  for (const id of [...model.keys()]) table.release(id, Number.MAX_SAFE_INTEGER);
  t.equal(table.size, 0, 'empty after releasing everything');
  t.ok(table.bytes < 256 * 1024, `memory given back: ${table.bytes} bytes`);
});

t.test('a million held nodes take well under 100 bytes each besides their paths', async (t) => {
  const table = new PinTable();
  const path = Buffer.from('INBOX/cur/1700000000.M0P0.mailhost,S=64:2,S');
  const before = process.memoryUsage().arrayBuffers;
  for (let i = 0; i < 1_000_000; i++) table.add(BigInt(i) * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn, 0, path);
  const per = (table.bytes - 1_000_000 * path.length * 2) / 1_000_000;
  t.equal(table.size, 1_000_000);
  t.ok(table.bytes / 1_000_000 < 100 + path.length * 2, `${(table.bytes / 1_000_000).toFixed(0)} bytes per node (${per.toFixed(0)} besides the path and arena slack)`);
  t.ok(process.memoryUsage().arrayBuffers - before < 200 * 1024 * 1024, 'typed arrays only');
  t.ok(table.has(999_999n * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn));
});
