// The flat id tables check keeps (lib/util/id-set.ts): the same answers as a Map of hex
// strings through many growths, ids given as views into bigger buffers, the all-zero id,
// and the per-id cost the docs quote.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { IdMap, IdSet } from '../lib/util/id-set.js';

t.test('IdSet agrees with a Set of hex strings', async (t) => {
  const set = new IdSet();
  const ref = new Set<string>();
  // Ids as views at odd offsets of one buffer, as trailer entries are.
  const pool = randomBytes(16 * 50_000 + 3);
  const ids = Array.from({ length: 50_000 }, (_, i) => pool.subarray(3 + i * 16, 3 + (i + 1) * 16));
  ids.push(Buffer.alloc(16), Buffer.alloc(16, 0xff));
  let wrong = 0;
  for (const [i, id] of ids.entries()) {
    if (set.add(id) !== !ref.has(id.toString('hex'))) wrong++;
    ref.add(id.toString('hex'));
    if (i % 3 === 0 && set.add(Buffer.from(id))) wrong++; // a copy is the same id
  }
  t.equal(wrong, 0, 'add says whether the id was new');
  t.equal(set.size, ref.size);
  t.ok(ids.every((id) => set.has(id)), 'every id added is found');
  t.ok(set.has(Buffer.alloc(16)), 'the all-zero id is an id like any other');
  const absent = Array.from({ length: 10_000 }, () => randomBytes(16));
  t.ok(absent.every((id) => !set.has(id)), 'ids never added are not found');
  const perId = set.bytes / set.size;
  t.ok(perId >= 21 && perId <= 43, `${perId.toFixed(1)} bytes per id`);
  t.throws(() => set.add(Buffer.alloc(15)), RangeError, 'an id is 16 bytes');
});

t.test('IdMap keeps each value through growth; a later set replaces', async (t) => {
  const map = new IdMap();
  const ref = new Map<string, string>();
  for (let i = 0; i < 40_000; i++) {
    const id = randomBytes(16);
    const why = `its pack ${i % 7} is missing`;
    map.set(id, why);
    ref.set(id.toString('hex'), why);
    if (i % 5 === 0) {
      map.set(id, `corrupt: ${i}`);
      ref.set(id.toString('hex'), `corrupt: ${i}`);
    }
  }
  t.equal(map.size, ref.size);
  let wrong = 0;
  for (const [hex, why] of ref) if (map.get(Buffer.from(hex, 'hex')) !== why) wrong++;
  t.equal(wrong, 0, 'every id has its latest value');
  t.equal(map.get(randomBytes(16)), undefined);
  t.equal(new IdMap().get(randomBytes(16)), undefined, 'an empty map has nothing');
  const perId = map.bytes / map.size;
  t.ok(perId <= 54, `${perId.toFixed(1)} bytes per id`);
});
