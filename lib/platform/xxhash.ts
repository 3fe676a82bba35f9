import { requireCjs } from './cjs-require.js';

export const xxhash = requireCjs('@node-rs/xxhash') as typeof import('@node-rs/xxhash');
