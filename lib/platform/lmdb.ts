import { requireCjs } from './cjs-require.js';

// Every user of lmdb takes it from here: two copies in one process would each open the
// index on their own.
export const lmdb = requireCjs('lmdb') as typeof import('lmdb');
