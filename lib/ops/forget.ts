// Retention: which snapshot records to keep, by calendar periods in local time, and
// dropping the others. Each rule keeps the newest snapshot of each of its N most recent
// periods that have snapshots (a gap of a week without backups does not use up a daily
// slot), so a source whose backups fail for a while never loses its last good snapshots.
// Forget removes records only; the data they alone reached is freed by prune.

import { SnapshotRecord } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { compareSnapshots } from '../store/snapshot-store.js';
import { SnapfsError } from '../errors.js';

export interface RetentionPolicy {
  keepLast?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
}

export type RetentionRule = 'last' | 'daily' | 'weekly' | 'monthly';

export interface RetentionDecision {
  snapshot: SnapshotRecord;
  keep: boolean;
  /** Rules that keep it, e.g. "daily 2026-11-28", "weekly 2026-W48". Empty when removed. */
  reasons: string[];
}

export interface ForgetOptions {
  /** Only this source; every source (each with its own periods) when absent. */
  source?: string;
  policy: RetentionPolicy;
  dryRun?: boolean;
}

export interface ForgetResult {
  dryRun: boolean;
  decisions: RetentionDecision[];
  kept: number;
  removed: number;
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** Local calendar day, e.g. 2026-11-28. */
export function dayKey(d: Date): string {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** ISO 8601 week of the local date, e.g. 2026-W48 (weeks start on Monday; week 1 holds January 4th). */
export function isoWeekKey(d: Date): string {
  // Work on the local calendar date at UTC midnight, so DST never shifts a day.
  const date = new Date(Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()));
  const weekday = date.getUTCDay() || 7; // Monday 1 .. Sunday 7
  date.setUTCDate(date.getUTCDate() + 4 - weekday); // the Thursday of this week decides its year
  const year = date.getUTCFullYear();
  const week = Math.floor((date.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 / 7) + 1;
  return `${year}-W${pad(week)}`;
}

/** Local calendar month, e.g. 2026-11. */
export function monthKey(d: Date): string {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}`;
}

const RULES: Array<{ rule: RetentionRule; option: keyof RetentionPolicy; period: (d: Date, i: number) => string }> = [
  { rule: 'last', option: 'keepLast', period: (_d, i) => String(i) },
  { rule: 'daily', option: 'keepDaily', period: dayKey },
  { rule: 'weekly', option: 'keepWeekly', period: isoWeekKey },
  { rule: 'monthly', option: 'keepMonthly', period: monthKey },
];

export function validatePolicy(policy: RetentionPolicy): void {
  let any = false;
  for (const { option } of RULES) {
    const n = policy[option];
    if (n === undefined) continue;
    if (!Number.isSafeInteger(n) || n < 0) throw new SnapfsError('INVALID_ARGUMENT', `${option}: expected a whole number >= 0, got ${n}`);
    if (n > 0) any = true;
  }
  // A policy that keeps nothing would forget every snapshot: surely a mistake.
  if (!any) throw new SnapfsError('INVALID_ARGUMENT', 'retention keeps nothing: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly greater than 0');
}

/**
 * Decides for every record, per source: newest first, a record is kept by a rule when it
 * is the first (newest) seen of its period and the rule has slots left.
 */
export function applyRetention(records: readonly SnapshotRecord[], policy: RetentionPolicy): RetentionDecision[] {
  validatePolicy(policy);
  const bySource = new Map<string, SnapshotRecord[]>();
  for (const r of records) {
    let list = bySource.get(r.source);
    if (!list) bySource.set(r.source, (list = []));
    list.push(r);
  }
  const out: RetentionDecision[] = [];
  for (const source of [...bySource.keys()].sort()) {
    const newestFirst = [...bySource.get(source)!].sort(compareSnapshots).reverse();
    const decisions = newestFirst.map((snapshot) => ({ snapshot, keep: false, reasons: [] as string[] }));
    for (const { rule, option, period } of RULES) {
      const slots = policy[option] ?? 0;
      const seen = new Set<string>();
      for (let i = 0; i < decisions.length && seen.size < slots; i++) {
        const key = period(new Date(decisions[i]!.snapshot.time), i);
        if (seen.has(key)) continue;
        seen.add(key);
        decisions[i]!.keep = true;
        decisions[i]!.reasons.push(rule === 'last' ? `last ${i + 1}` : `${rule} ${key}`);
      }
    }
    out.push(...decisions.reverse());
  }
  return out;
}

/** Applies a policy and removes the records it does not keep (under the writer lock). */
export async function forget(repo: Repository, opts: ForgetOptions): Promise<ForgetResult> {
  validatePolicy(opts.policy);
  const dryRun = opts.dryRun ?? false;
  // The lock also keeps a backup from choosing a parent that is about to disappear.
  const lock = dryRun ? undefined : await Repository.lockWriter(repo.layout, 'forget');
  try {
    const { records, damaged } = await repo.snapshots.load();
    if (damaged.length > 0 && !dryRun) {
      // A record that does not decode has an unknown source and time: refuse rather than guess.
      throw new SnapfsError('CORRUPT_DATA', `cannot apply retention: ${damaged.length} snapshot record(s) are damaged (${damaged[0]!.file}: ${damaged[0]!.error}); run 'snapfs check'`);
    }
    const selected = opts.source === undefined ? records : records.filter((r) => r.source === opts.source);
    if (opts.source !== undefined && selected.length === 0) {
      throw new SnapfsError('SNAPSHOT_NOT_FOUND', `no snapshots of source ${JSON.stringify(opts.source)}`);
    }
    const decisions = applyRetention(selected, opts.policy);
    if (!dryRun) {
      for (const d of decisions) if (!d.keep) await repo.snapshots.remove(d.snapshot.id);
    }
    const kept = decisions.filter((d) => d.keep).length;
    return { dryRun, decisions, kept, removed: decisions.length - kept };
  } finally {
    await lock?.release();
  }
}
