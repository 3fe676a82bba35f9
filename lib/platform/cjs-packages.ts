// Native packages loaded with require. An ESM `import` of a CommonJS package first runs
// Node's CommonJS export lexer over its loader: ~50 ms of every command's start-up for
// xxhash and zstd (0.11 against 0.06 s of CPU for a process that loads both). lmdb ships
// both builds; its CommonJS one loads ~30 ms sooner (its ESM one imports CommonJS
// helpers). Nothing may import 'lmdb' as ESM as well: two copies of lmdb-js would open
// the same environment twice in one process.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export const xxhash = require('@node-rs/xxhash') as typeof import('@node-rs/xxhash');
export const zstd = require('zstd-napi/binding.js') as typeof import('zstd-napi/binding.js');
export const lmdb = require('lmdb') as typeof import('lmdb');
