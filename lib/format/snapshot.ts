// Snapshot record (format version 1): a small JSON document, one file per snapshot.
// Writing it (atomically) is what makes a snapshot exist.

import { CorruptDataError } from '../errors.js';

export const SNAPSHOT_FORMAT_VERSION = 1;

export interface SnapshotStats {
  files: number;
  directories: number;
  otherEntries: number;
  filesNew: number;
  filesChanged: number;
  filesUnchanged: number;
  filesOpened: number;
  /**
   * Directories that listed exactly as when their previous tree was made, which was reused
   * without reading it (lib/backup/listing-cache.ts). Absent from older records.
   */
  directoriesUnchanged?: number;
  /**
   * Entries whose ctime was too recent to trust (they may change again within the same
   * clock tick), stored to be read again by the next backup. Absent from older records.
   */
  entriesChangedRecently?: number;
  /** Files that could not be read; the snapshot is partial when this is not zero. */
  filesFailed: number;
  bytesTotal: number;
  bytesRead: number;
  blobsAdded: number;
  dataBlobsAdded: number;
  bytesAddedRaw: number;
  bytesAddedStored: number;
  durationMs: number;
}

export interface SnapshotRecord {
  version: number;
  /** 32 hex digits. */
  id: string;
  source: string;
  /** Nominal time (ISO 8601, given by --time or the start of the backup). */
  time: string;
  /** Directory name in the mount: local date of `time`, with _2, _3... for repeats. */
  name: string;
  /** Root tree id (32 hex digits). */
  root: string;
  parent: string | null;
  /** This snapshot's generation; entries it stored first carry it as `since`. */
  generation: number;
  /**
   * Publication time (ns since the epoch, as a decimal string) of every generation the
   * tree may reference, this snapshot's included. Carried from the parent so that
   * `since` stays resolvable after older snapshots are forgotten.
   */
  generations: Record<string, string>;
  /** Metadata of the backed-up directory itself (the snapshot's root). */
  rootMeta: { mode: number; uid: number; gid: number; mtimeNs: string };
  hostname: string;
  paths: string[];
  excludes: string[];
  partial: boolean;
  stats: SnapshotStats;
}

export function encodeSnapshot(rec: SnapshotRecord): Buffer {
  return Buffer.from(JSON.stringify(rec, null, 1) + '\n', 'utf8');
}

const HEX32 = /^[0-9a-f]{32}$/;
const DATE_NAME = /^\d{4}-\d{2}-\d{2}(_\d+)?$/;
const SOURCE_COMPONENT = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/**
 * Whether `name` is a valid source name: '/'-separated components of letters, digits, '.',
 * '_', '+' and '-' that start with a letter or digit and are neither 'last' nor a date. Source
 * names become directories (in the mount, and under TARGET in a restore of all sources), so a
 * record read from disk is held to the same rule as a name given on the command line.
 */
export function isValidSourceName(name: string): boolean {
  return name.split('/').every((p) => SOURCE_COMPONENT.test(p) && p !== 'last' && !DATE_NAME.test(p) && p.length <= 128);
}

export function decodeSnapshot(buf: Buffer, what: string): SnapshotRecord {
  let v: unknown;
  try {
    v = JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw new CorruptDataError(`${what}: not valid JSON`, { cause: err });
  }
  const r = v as SnapshotRecord;
  const fail = (field: string): never => {
    throw new CorruptDataError(`${what}: missing or invalid field '${field}'`);
  };
  if (typeof r !== 'object' || r === null) fail('record');
  if (typeof r.version !== 'number') fail('version');
  if (r.version > SNAPSHOT_FORMAT_VERSION) {
    throw new CorruptDataError(`${what}: written by a newer snapfs (snapshot format ${r.version})`);
  }
  if (typeof r.id !== 'string' || !HEX32.test(r.id)) fail('id');
  if (typeof r.source !== 'string' || !isValidSourceName(r.source)) fail('source');
  if (typeof r.time !== 'string' || Number.isNaN(Date.parse(r.time))) fail('time');
  if (typeof r.name !== 'string' || !DATE_NAME.test(r.name)) fail('name');
  if (typeof r.root !== 'string' || !HEX32.test(r.root)) fail('root');
  if (r.parent !== null && (typeof r.parent !== 'string' || !HEX32.test(r.parent))) fail('parent');
  if (!Number.isSafeInteger(r.generation) || r.generation < 1) fail('generation');
  if (typeof r.generations !== 'object' || r.generations === null) fail('generations');
  for (const [k, t] of Object.entries(r.generations)) {
    if (!/^\d+$/.test(k) || typeof t !== 'string' || !/^\d+$/.test(t)) fail('generations');
  }
  if (!(String(r.generation) in r.generations)) fail('generations');
  if (typeof r.partial !== 'boolean') fail('partial');
  const m = r.rootMeta;
  if (typeof m !== 'object' || m === null || ![m.mode, m.uid, m.gid].every(Number.isInteger) || !/^-?\d+$/.test(String(m.mtimeNs))) fail('rootMeta');
  if (typeof r.stats !== 'object' || r.stats === null) fail('stats');
  r.paths ??= [];
  r.excludes ??= [];
  r.hostname ??= '';
  return r;
}

export function publishedAtNs(rec: SnapshotRecord): bigint {
  return BigInt(rec.generations[String(rec.generation)]!);
}

/** Local calendar date (YYYY-MM-DD) of an instant, in the process's time zone. */
export function localDate(iso: string): string {
  const d = new Date(iso);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
