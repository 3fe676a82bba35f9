// The native packages ship as CommonJS and are loaded with require: an ESM `import` of
// them first runs Node's CommonJS export lexer, ~50 ms of every command's start-up for
// xxhash and zstd (0.11 against 0.06 s of CPU for a process that loads both). lmdb-js
// ships both builds: its CommonJS one is one bundled file, its ESM entry a dozen modules
// to resolve and link (45-62 against 77-92 ms to load here).
// Each package has its own module (xxhash.ts, zstd.ts, lmdb.ts) so that a process loads
// only what it uses: a compression worker loads zstd alone.
import { createRequire } from 'node:module';

export const requireCjs = createRequire(import.meta.url);
