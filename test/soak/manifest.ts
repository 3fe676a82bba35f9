// What a snapshot must contain: every path of the tree the backup saw, with its kind, mode,
// size and (files) SHA-256. Written by the orchestrator while the tree is quiet, read by
// the reader process to judge what the mount shows. One JSON file per snapshot name.

import { promises as fsp } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

export interface ManifestEntry {
  kind: 'file' | 'dir' | 'other';
  mode: number;
  size: number;
  sha256?: string;
}

export interface Manifest {
  snapshot: string;
  /** Keyed by path relative to the snapshot root ('a/b'); the root itself is not listed. */
  entries: Record<string, ManifestEntry>;
}

const READ_BYTES = 1024 * 1024;

/** Hashes a file by streaming it; `buffer` is scratch space, reused across calls. */
export async function hashFile(path: string, buffer: Buffer): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  const fh = await fsp.open(path, 'r');
  let bytes = 0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buffer, 0, buffer.length, bytes);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      bytes += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return { sha256: hash.digest('hex'), bytes };
}

export function newReadBuffer(): Buffer {
  return Buffer.allocUnsafe(READ_BYTES);
}

/** The manifest of the tree at `root` as it is now (the caller keeps it quiet). */
export async function manifestOf(root: string, snapshot: string): Promise<Manifest> {
  const entries: Manifest['entries'] = {};
  const buffer = newReadBuffer();
  async function visit(rel: string): Promise<void> {
    for (const name of (await fsp.readdir(join(root, rel))).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const st = await fsp.lstat(join(root, path));
      if (st.isDirectory()) {
        entries[path] = { kind: 'dir', mode: st.mode, size: 0 };
        await visit(path);
      } else if (st.isFile()) {
        const { sha256, bytes } = await hashFile(join(root, path), buffer);
        entries[path] = { kind: 'file', mode: st.mode, size: bytes, sha256 };
      } else {
        entries[path] = { kind: 'other', mode: st.mode, size: st.size };
      }
    }
  }
  await visit('');
  return { snapshot, entries };
}

/** Written under a temporary name and renamed: a reader never sees half a manifest. */
export async function saveManifest(dir: string, m: Manifest): Promise<void> {
  const tmp = join(dir, `.${m.snapshot}.tmp`);
  await fsp.writeFile(tmp, JSON.stringify(m));
  await fsp.rename(tmp, join(dir, `${m.snapshot}.json`));
}

/** The manifest recorded for `snapshot`, or undefined when there is none. */
export async function loadManifest(dir: string, snapshot: string): Promise<Manifest | undefined> {
  try {
    return JSON.parse(await fsp.readFile(join(dir, `${snapshot}.json`), 'utf8')) as Manifest;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Names of every snapshot with a manifest, sorted (date names sort by time). */
export async function manifestNames(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
}
