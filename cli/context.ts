// Shared plumbing of the commands: open a repository for the duration of a command,
// and show names (raw bytes) safely.
import type { Repository } from '../lib/store/repository.js';

export async function withRepository<T>(root: string, fn: (repo: Repository) => Promise<T>, readOnly = false): Promise<T> {
  // Loaded here, not at start-up: `snapfs --help` and the like need none of it.
  const { Repository } = await import('../lib/store/repository.js');
  const repo = await Repository.open(root, { readOnly });
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

/** A name for humans: printable UTF-8 as is, anything else as \xNN (like ls -b). */
export function displayName(name: Buffer): string {
  const s = name.toString('utf8');
  if (Buffer.from(s, 'utf8').equals(name) && !/[\x00-\x1f\x7f]/.test(s)) return s;
  let out = '';
  for (const b of name) out += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return out;
}

/** A name for JSON: a string when it is valid UTF-8, else base64 under another key. */
export function jsonName(name: Buffer): { name: string } | { nameBase64: string } {
  const s = name.toString('utf8');
  return Buffer.from(s, 'utf8').equals(name) ? { name: s } : { nameBase64: name.toString('base64') };
}
