// Writes the xxHash header that zstd-napi ships, with XXH3 enabled, to the path given:
// the binding verifies chunks it reads ahead (keyed XXH3-128, as lib/format/blob-id.ts)
// on threads of its own, and zstd's copy of the header strips XXH3 out ("Local adaptations
// for Zstandard": it defines XXH_NO_XXH3). Only that definition is removed; a header that
// does not have it exactly once fails the build rather than compile something else.
const fs = require('node:fs');
const path = require('node:path');
const source = path.join(path.dirname(require.resolve('zstd-napi/package.json')), 'deps', 'zstd', 'lib', 'common', 'xxhash.h');
const text = fs.readFileSync(source, 'utf8');
const adaptation = '#ifndef XXH_NO_XXH3\n# define XXH_NO_XXH3\n#endif\n';
const at = text.indexOf(adaptation);
if (at < 0 || text.indexOf(adaptation, at + 1) >= 0) {
  console.error(`${source}: zstd's XXH_NO_XXH3 adaptation not found exactly once; cannot build the XXH3 header`);
  process.exit(1);
}
const out = process.argv[2];
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, text.slice(0, at) + text.slice(at + adaptation.length));
