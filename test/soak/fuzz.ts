// The decoder fuzzer of test/fuzz-decoders.test.ts, for longer: every target for SECONDS.
//   node dist/test/soak/fuzz.js [SECONDS=120] [SEED] [TARGET-SUBSTRING]
// Exits 1 when any target failed; prints each failure with its input (hex).
import { fuzzInWorker, fuzzTargets } from '../helpers/fuzz.js';

const seconds = Number(process.argv[2] ?? 120);
const seed = process.argv[3] ? Number(process.argv[3]) : undefined;
const only = process.argv[4];
let failed = 0;
for (const t of fuzzTargets()) {
  if (only && !t.name.includes(only)) continue;
  const r = await fuzzInWorker(t.name, seconds * 1000, seed);
  console.log(`${t.name}: ${r.runs} inputs, ${r.rejected} rejected, slowest ${r.slowestMs.toFixed(1)} ms, largest allocation ${r.maxAllocBytes} B, seed ${r.seed}`);
  for (const f of r.failures) {
    failed++;
    console.log(`  FAIL ${f.kind}: ${f.message}\n  input: ${f.inputHex}`);
  }
}
process.exit(failed ? 1 : 0);
