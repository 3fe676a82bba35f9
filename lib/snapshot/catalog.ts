// Naming and finding snapshots: sources, per-date names (2026-11-28, 2026-11-28_2, ...),
// `last`, and the SOURCE@SNAP[:PATH] notation of the command line.

import { SnapshotRecord, isValidSourceName, localDate } from '../format/snapshot.js';
import { SnapshotStore } from '../store/snapshot-store.js';
import { SnapfsError } from '../errors.js';

const DATE_NAME = /^\d{4}-\d{2}-\d{2}(_\d+)?$/;

/**
 * A source name nests in the mount (MNT/10.0.0.5/mail/imap/...), so its components must
 * be plain names that can never be confused with a snapshot directory or `last`.
 */
export function validateSourceName(name: string): string {
  if (!isValidSourceName(name)) {
    throw new SnapfsError(
      'INVALID_ARGUMENT',
      `invalid source name ${JSON.stringify(name)}: components must be letters, digits, '.', '_', '+' or '-', and not 'last' or a date`,
    );
  }
  return name;
}

/** The name a new snapshot of `source` at `time` gets: its local date, suffixed when taken. */
export function nextSnapshotName(existing: readonly SnapshotRecord[], source: string, time: string): string {
  const date = localDate(time);
  const taken = new Set(existing.filter((r) => r.source === source).map((r) => r.name));
  if (!taken.has(date)) return date;
  for (let i = 2; ; i++) if (!taken.has(`${date}_${i}`)) return `${date}_${i}`;
}

export interface SnapshotSpec {
  source: string;
  snapshot: string;
  path?: string;
}

/** Parses SOURCE@SNAP[:PATH]. */
export function parseSnapshotSpec(spec: string, requirePath = false): SnapshotSpec {
  const at = spec.indexOf('@');
  if (at <= 0) throw new SnapfsError('INVALID_ARGUMENT', `expected SOURCE@SNAPSHOT[:PATH], got ${JSON.stringify(spec)}`);
  const source = spec.slice(0, at);
  const rest = spec.slice(at + 1);
  const colon = rest.indexOf(':');
  const snapshot = colon < 0 ? rest : rest.slice(0, colon);
  const path = colon < 0 ? undefined : rest.slice(colon + 1);
  if (!snapshot) throw new SnapfsError('INVALID_ARGUMENT', `missing snapshot in ${JSON.stringify(spec)} (use a date, 'last' or an id)`);
  if (requirePath && !path) throw new SnapfsError('INVALID_ARGUMENT', `missing :PATH in ${JSON.stringify(spec)}`);
  return { source, snapshot, path };
}

export class SnapshotCatalog {
  constructor(private readonly store: SnapshotStore) {}

  async all(): Promise<SnapshotRecord[]> {
    return (await this.store.load()).records;
  }

  async ofSource(source: string): Promise<SnapshotRecord[]> {
    return (await this.all()).filter((r) => r.source === source);
  }

  async sources(): Promise<string[]> {
    return [...new Set((await this.all()).map((r) => r.source))].sort();
  }

  /** Newest snapshot of a source, or undefined. */
  async latest(source: string): Promise<SnapshotRecord | undefined> {
    const list = await this.ofSource(source);
    return list[list.length - 1];
  }

  /** Finds a snapshot by date name, `last`, or id (full or a unique prefix of 8+ digits). */
  async resolve(source: string, spec: string): Promise<SnapshotRecord> {
    const list = await this.ofSource(source);
    if (list.length === 0) throw new SnapfsError('SNAPSHOT_NOT_FOUND', `no snapshots of source ${JSON.stringify(source)}`);
    let found: SnapshotRecord | undefined;
    if (spec === 'last' || spec === 'latest') found = list[list.length - 1];
    else if (DATE_NAME.test(spec)) found = list.find((r) => r.name === spec);
    else if (/^[0-9a-f]{8,32}$/.test(spec)) {
      const matches = list.filter((r) => r.id.startsWith(spec));
      if (matches.length > 1) throw new SnapfsError('INVALID_ARGUMENT', `snapshot id prefix ${spec} is ambiguous`);
      found = matches[0];
    }
    if (!found) throw new SnapfsError('SNAPSHOT_NOT_FOUND', `source ${JSON.stringify(source)} has no snapshot ${JSON.stringify(spec)}`);
    return found;
  }
}
