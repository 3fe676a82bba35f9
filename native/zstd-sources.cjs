// Prints what binding.gyp needs to compile zstd's decoder from the sources zstd-napi ships
// (snapfs decompresses on the thread pool; zstd-napi's own binding only runs on the caller's
// thread): `include` the header directory, `sources` the decoder's C files.
const path = require('node:path');
const lib = path.join(path.dirname(require.resolve('zstd-napi/package.json')), 'deps', 'zstd', 'lib');
const files = [
  'common/debug.c', 'common/entropy_common.c', 'common/error_private.c', 'common/fse_decompress.c',
  'common/xxhash.c', 'common/zstd_common.c',
  'decompress/huf_decompress.c', 'decompress/zstd_ddict.c', 'decompress/zstd_decompress.c',
  'decompress/zstd_decompress_block.c',
];
// Relative to this directory (gyp runs this here): gyp's make output mishandles absolute sources.
const rel = (f) => path.relative(__dirname, path.join(lib, f));
process.stdout.write(process.argv[2] === 'include' ? rel('') : files.map(rel).join(' '));
