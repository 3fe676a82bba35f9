import { requireCjs } from './cjs-require.js';

export const zstd = requireCjs('zstd-napi/binding.js') as typeof import('zstd-napi/binding.js');
