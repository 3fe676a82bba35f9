// Snapshot records as files, one per snapshot (snapshots/ID.json). Renaming a record into
// place is the commit point of a backup; unlinking it is how forget drops a snapshot.
// Records are few and small, and this keeps them out of the (rebuildable) index.

import { promises as fs } from 'node:fs';
import { RepoLayout } from './layout.js';
import { writeFileAtomic } from './files.js';
import { SnapshotRecord, decodeSnapshot, encodeSnapshot } from '../format/snapshot.js';
import { SnapfsError, errnoCode, fromSystemError } from '../errors.js';
import { mapLimit } from '../util/semaphore.js';

const READ_CONCURRENCY = 16;

export interface SnapshotLoadResult {
  records: SnapshotRecord[];
  /** Files that could not be read or decoded. */
  damaged: Array<{ file: string; error: string }>;
}

export class SnapshotStore {
  /** Decoded records by file name: a record never changes once written. */
  private readonly cache = new Map<string, SnapshotRecord>();

  constructor(private readonly layout: RepoLayout) {}

  async save(rec: SnapshotRecord): Promise<void> {
    await writeFileAtomic(this.layout.snapshotFile(rec.id), encodeSnapshot(rec), 0o600);
  }

  async remove(id: string): Promise<void> {
    try {
      await fs.unlink(this.layout.snapshotFile(id));
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw fromSystemError(err, `removing snapshot ${id}`);
    }
  }

  /** All records, sorted by time then publication. */
  async load(): Promise<SnapshotLoadResult> {
    let names: string[];
    try {
      names = await fs.readdir(this.layout.snapshots);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new SnapfsError('NOT_A_REPOSITORY', `${this.layout.root}: no snapshots directory`);
      throw fromSystemError(err, `listing ${this.layout.snapshots}`);
    }
    const live = new Set(names);
    for (const k of this.cache.keys()) if (!live.has(k)) this.cache.delete(k);
    const damaged: SnapshotLoadResult['damaged'] = [];
    // Read several at a time: a repository of a few years holds thousands of records,
    // and each is three round trips to the thread pool.
    const unread = names.filter((name) => /^[0-9a-f]{32}\.json$/.test(name) && !this.cache.has(name));
    const read = await mapLimit(unread, READ_CONCURRENCY, async (name) => {
      const file = `${this.layout.snapshots}/${name}`;
      try {
        const rec = decodeSnapshot(await fs.readFile(file), file);
        if (`${rec.id}.json` !== name) throw new Error(`record id ${rec.id} does not match its file name`);
        return rec;
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return undefined; // forgotten meanwhile
        return { file, error: (err as Error).message };
      }
    });
    read.forEach((r, i) => {
      if (r && 'error' in r) damaged.push(r);
      else if (r) this.cache.set(unread[i]!, r);
    });
    const records = [...this.cache.values()].sort(compareSnapshots);
    return { records, damaged };
  }
}

export function compareSnapshots(a: SnapshotRecord, b: SnapshotRecord): number {
  const t = Date.parse(a.time) - Date.parse(b.time);
  if (t !== 0) return t;
  const pa = BigInt(a.generations[String(a.generation)]!);
  const pb = BigInt(b.generations[String(b.generation)]!);
  return pa < pb ? -1 : pa > pb ? 1 : a.id.localeCompare(b.id);
}
