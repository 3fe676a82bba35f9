// Disaster recovery: every source's snapshot of a date (or the newest before it) restored
// side by side into TARGET/<source>/, each with full metadata (see restore.ts).

import path from 'node:path';
import { SnapshotRecord, localDate } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { RestoreStats, requireEmptyTarget, restore } from './restore.js';
import { SnapfsError, isSnapfsError } from '../errors.js';

export interface RestoreAllOptions {
  onSource?: (source: string, snapshot: SnapshotRecord) => void;
  onProgress?: (source: string, stats: RestoreStats, current: string) => void;
}

export interface SourceRestore {
  source: string;
  status: 'restored' | 'skipped' | 'failed';
  snapshot?: { id: string; name: string; time: string };
  target?: string;
  stats?: RestoreStats;
  /** Why it was skipped or failed. */
  message?: string;
}

export interface RestoreAllResult {
  date: string;
  target: string;
  sources: SourceRestore[];
}

/**
 * `date` is a local calendar date (YYYY-MM-DD): the newest snapshot whose local date is that
 * day or earlier is chosen per source; 'last' chooses each source's newest.
 */
export async function restoreAllSources(repo: Repository, date: string, target: string, opts: RestoreAllOptions = {}): Promise<RestoreAllResult> {
  if (date !== 'last' && date !== 'latest' && !/^\d{4}-\d{2}-\d{2}$/.test(date)) {
    throw new SnapfsError('INVALID_ARGUMENT', `--all-sources expects @YYYY-MM-DD or @last, got @${date}`);
  }
  const targetAbs = path.resolve(target);
  await requireEmptyTarget(targetAbs);
  const { records: all, damaged } = await repo.snapshots.load();
  if (all.length === 0 && damaged.length === 0) throw new SnapfsError('SNAPSHOT_NOT_FOUND', 'the repository has no snapshots');
  const sources = [...new Set(all.map((r) => r.source))].sort();
  const result: RestoreAllResult = { date, target: targetAbs, sources: [] };
  // An unreadable record may be the only snapshot of a source: the recovery is incomplete,
  // and the result must say so rather than leave that source out without a word.
  for (const d of damaged) {
    result.sources.push({ source: `(unreadable record ${path.basename(d.file)})`, status: 'failed', message: `unreadable snapshot record: ${d.error}` });
  }
  for (const source of sources) {
    const out: SourceRestore = { source, status: 'skipped' };
    result.sources.push(out);
    // Sources nest (mail, mail/imap): one restored inside the other would mix two trees.
    const nested = sources.find((o) => o !== source && (o.startsWith(`${source}/`) || source.startsWith(`${o}/`)));
    if (nested) {
      out.status = 'failed';
      out.message = `source names ${source} and ${nested} nest; restore them one at a time with 'snapfs restore REPO SOURCE@${date} DIR'`;
      continue;
    }
    const list = all.filter((r) => r.source === source && (date === 'last' || date === 'latest' || localDate(r.time) <= date));
    const snap = list[list.length - 1];
    if (!snap) {
      out.message = `no snapshot on or before ${date}`;
      continue;
    }
    out.snapshot = { id: snap.id, name: snap.name, time: snap.time };
    out.target = path.join(targetAbs, ...source.split('/'));
    opts.onSource?.(source, snap);
    try {
      out.stats = await restore(repo, snap, out.target, { onProgress: (s, current) => opts.onProgress?.(source, s, current) });
      out.status = 'restored';
    } catch (err) {
      // Damage in one source must not keep the others from coming back.
      if (!isSnapfsError(err)) throw err;
      out.status = 'failed';
      out.message = err.message;
    }
  }
  return result;
}
