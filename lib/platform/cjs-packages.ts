// The native packages that ship as CommonJS, loaded with require. An ESM `import` of them
// first runs Node's CommonJS export lexer over their loaders: ~50 ms of every command's
// start-up for these two (0.11 against 0.06 s of CPU for a process that loads both).
// lmdb-js ships both: its CommonJS build is one bundled file, its ESM entry a dozen
// modules to resolve and link (45-62 against 77-92 ms to load here). Every user of lmdb
// takes it from here: two copies in one process would each open the index on their own.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export const xxhash = require('@node-rs/xxhash') as typeof import('@node-rs/xxhash');
export const zstd = require('zstd-napi/binding.js') as typeof import('zstd-napi/binding.js');
export const lmdb = require('lmdb') as typeof import('lmdb');
