// Counting the reader's walks, and deciding which of their failures are excused.
//
// Wrong bytes, a wrong size or mode, an entry no snapshot has: always an error. A path
// that could not be read (or was not there): excused only when
//   - the walk was of a snapshot that forget removed, and it ended after that forget
//     began, and the failures are ENOENT or EIO (prune may have taken the data away): "gone";
//   - or it was a walk of `last` during which `last` moved, and the failures are ENOENT
//     (the old snapshot's paths no longer exist under `last`): "raced".
import type { WalkReport } from './reader.js';

export interface WalkTally {
  walks: number;
  /** Walks of `last`; of those, walks during which it moved. */
  last: number;
  raced: number;
  dated: number;
  /** Walks of forgotten snapshots that failed in the allowed ways. */
  gone: number;
  files: number;
  bytes: number;
  /** Longest walk, ms: a mount that slows down over time shows here. */
  slowestMs: number;
}

export function newWalkTally(): WalkTally {
  return { walks: 0, last: 0, raced: 0, dated: 0, gone: 0, files: 0, bytes: 0, slowestMs: 0 };
}

const GONE_CODES = new Set(['ENOENT', 'EIO']);

export function classifyWalk(tally: WalkTally, r: WalkReport, forgottenAt: Map<string, number>, error: (message: string) => void): void {
  tally.walks++;
  tally.files += r.files;
  tally.bytes += r.bytes;
  tally.slowestMs = Math.max(tally.slowestMs, r.ms);
  if (r.walked === 'last') tally.last++;
  else tally.dated++;
  if (r.raced) tally.raced++;
  const what = `walk of ${r.walked} (${r.snapshot})`;
  for (const w of r.wrong.slice(0, 5)) error(`${what}: wrong: ${w}`);
  for (const e of r.extra.slice(0, 5)) error(`${what}: extra entry ${e}`);
  if (!r.failures.length && !r.missing.length) return;
  const codes = r.failures.map((f) => f.code);
  const forgotten = forgottenAt.get(r.snapshot);
  if (r.raced && codes.every((c) => c === 'ENOENT')) return;
  if (forgotten !== undefined && r.endedAt >= forgotten && codes.every((c) => GONE_CODES.has(c))) {
    tally.gone++;
    return;
  }
  for (const f of r.failures) error(`${what}: ${f.path}: ${f.message}`);
  if (r.missing.length) error(`${what}: ${r.missing.length} entries missing, e.g. ${r.missing.slice(0, 3).join(', ')}`);
}
