// Reading one snapshot directory of the mount and judging it against manifests.
// observe() only reads (async I/O: the mount is served by another process, but a reader
// must never block on it either); judge() compares what was seen with what was committed.

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { Manifest, ManifestEntry } from './manifest.js';

export interface Seen {
  kind: ManifestEntry['kind'];
  mode: number;
  /** Files: st_size of the open file, bytes read from it, their hash. */
  size: number;
  bytesRead?: number;
  sha256?: string;
}

export interface Observation {
  entries: Map<string, Seen>;
  /** Operations that failed, with their errno code ('ENOENT', 'EIO', ...). */
  failures: Array<{ path: string; code: string; message: string }>;
}

/** Walks `dir` recursively, reading every file in full. */
export async function observe(dir: string, buffer: Buffer): Promise<Observation> {
  const obs: Observation = { entries: new Map(), failures: [] };
  const attempt = async <T>(path: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      obs.failures.push({ path, code: e.code ?? 'UNKNOWN', message: e.message });
      return undefined;
    }
  };
  async function visit(rel: string): Promise<void> {
    const names = await attempt(rel || '.', () => fsp.readdir(join(dir, rel)));
    for (const name of names ?? []) {
      const path = rel ? `${rel}/${name}` : name;
      const st = await attempt(path, () => fsp.lstat(join(dir, path)));
      if (!st) continue;
      if (st.isDirectory()) {
        obs.entries.set(path, { kind: 'dir', mode: st.mode, size: 0 });
        await visit(path);
      } else if (st.isFile()) {
        const seen = await attempt(path, () => readFile(join(dir, path), buffer));
        if (seen) obs.entries.set(path, seen);
      } else {
        obs.entries.set(path, { kind: 'other', mode: st.mode, size: st.size });
      }
    }
  }
  await visit('');
  return obs;
}

/** Size and mode from the open file itself, so they describe the bytes that were read. */
async function readFile(path: string, buffer: Buffer): Promise<Seen> {
  const fh = await fsp.open(path, 'r');
  try {
    const st = await fh.stat();
    const hash = createHash('sha256');
    let bytesRead = 0;
    for (;;) {
      const r = await fh.read(buffer, 0, buffer.length, bytesRead);
      if (r.bytesRead === 0) break;
      hash.update(buffer.subarray(0, r.bytesRead));
      bytesRead += r.bytesRead;
    }
    return { kind: 'file', mode: st.mode, size: st.size, bytesRead, sha256: hash.digest('hex') };
  } finally {
    await fh.close();
  }
}

export interface Verdict {
  /** Files whose bytes, size, kind or mode match no candidate: always an error. */
  wrong: string[];
  /** Entries that no candidate has: always an error. */
  extra: string[];
  /** Entries of the (single) candidate that were not seen. */
  missing: string[];
  files: number;
  bytes: number;
}

/**
 * Judges an observation. Every entry seen must match one of `candidates` exactly (kind,
 * mode, and for files size, bytes read and hash). With `complete`, there is one candidate
 * and every one of its entries must have been seen.
 */
export function judge(obs: Observation, candidates: Manifest[], complete: boolean): Verdict {
  const v: Verdict = { wrong: [], extra: [], missing: [], files: 0, bytes: 0 };
  for (const [path, seen] of obs.entries) {
    const expected = candidates.map((m) => m.entries[path]).filter((e): e is ManifestEntry => e !== undefined);
    if (!expected.length) {
      v.extra.push(path);
      continue;
    }
    if (expected.some((e) => matches(seen, e))) {
      if (seen.kind === 'file') {
        v.files++;
        v.bytes += seen.bytesRead!;
      }
      continue;
    }
    const e = expected[expected.length - 1]!;
    v.wrong.push(`${path}: ${describe(seen)}, expected ${describe(e)}`);
  }
  if (complete) {
    for (const path of Object.keys(candidates[0]!.entries)) if (!obs.entries.has(path)) v.missing.push(path);
  }
  return v;
}

function matches(seen: Seen, e: ManifestEntry): boolean {
  if (seen.kind !== e.kind || seen.mode !== e.mode) return false;
  if (seen.kind !== 'file') return true;
  return seen.size === e.size && seen.bytesRead === e.size && seen.sha256 === e.sha256;
}

function describe(e: Seen | ManifestEntry): string {
  const read = 'bytesRead' in e && e.bytesRead !== e.size ? ` (${e.bytesRead} read)` : '';
  return `${e.kind} mode ${e.mode.toString(8)} size ${e.size}${read}${e.sha256 ? ` sha256 ${e.sha256.slice(0, 12)}` : ''}`;
}
