// The soak's result as the table the script prints (and docs/reliability.md records).
import type { SoakResult } from './soak.js';

const MiB = 1024 * 1024;
const mib = (bytes: number): string => `${(bytes / MiB).toFixed(0)} MiB`;
/** RSS points shown for "over time": about this many, evenly spaced. */
const RSS_POINTS = 10;

export function formatSoakResult(r: SoakResult): string {
  const m = r.mutations;
  const mutationTotal = Object.values(m).reduce((a, b) => a + (b ?? 0), 0);
  const rows: Array<[string, string]> = [
    ['duration', `${r.settings.seconds} s asked, ${(r.elapsedMs / 1000).toFixed(0)} s run`],
    ['mutations', `${mutationTotal} (${Object.entries(m).map(([k, v]) => `${k} ${v}`).join(', ')})`],
    ['backups', `${r.backups}, one every ${r.settings.backupEveryMs / 1000} s of mutation`],
    ['forget+prune', `${r.prunes} (keep-last ${r.settings.keepLast}, every ${r.settings.maintenanceEvery} backups); ${r.forgotten} snapshots forgotten, ${r.snapshotsLeft} left`],
    ['check', `${r.checks} ok, ${r.checksReadData} of them --read-data`],
    ['reader walks', `${r.reads.walks}: last ${r.reads.last} (moved during the walk ${r.reads.raced}), dated ${r.reads.dated} (gone ${r.reads.gone}); slowest ${(r.reads.slowestMs / 1000).toFixed(1)} s`],
    ['files verified', String(r.reads.files)],
    ['bytes verified', `${(r.reads.bytes / 1024 ** 3).toFixed(2)} GiB`],
  ];
  const s = r.rss.summary;
  if (s) {
    rows.push(['mount RSS', `min ${mib(s.min)}, median ${mib(s.median)}, max ${mib(s.max)} (${s.samples} samples)`]);
    rows.push(['  first third', `median ${mib(s.firstThird.median)}, max ${mib(s.firstThird.max)}`]);
    rows.push(['  last third', `median ${mib(s.lastThird.median)}, max ${mib(s.lastThird.max)}`]);
    rows.push(['  limit', `${mib(s.limit)}: ${s.bounded ? 'bounded' : 'EXCEEDED'}`]);
    rows.push(['  anon (heap, malloc)', split(r, 'anonBytes')]);
    rows.push(['  file (node, libraries, index)', split(r, 'fileBytes')]);
    rows.push(['  over time', rssOverTime(r)]);
  }
  rows.push(['errors', String(r.errors.length)]);
  const width = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
  for (const e of r.errors.slice(0, 20)) lines.push(`  ${e.component}: ${e.message}`);
  return lines.join('\n');
}

/** One part of the RSS: its median in the first and last third of the run, and its largest sample. */
function split(r: SoakResult, part: 'anonBytes' | 'fileBytes'): string {
  const samples = r.rss.samples;
  const span = samples.at(-1)?.atMs ?? 0;
  const medianOf = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const first = samples.filter((x) => x.atMs <= span / 3).map((x) => x[part]);
  const last = samples.filter((x) => x.atMs >= (2 * span) / 3).map((x) => x[part]);
  return `median ${mib(medianOf(first))} in the first third, ${mib(medianOf(last))} in the last; max ${mib(Math.max(...samples.map((x) => x[part])))}`;
}

function rssOverTime(r: SoakResult): string {
  const samples = r.rss.samples;
  const step = Math.max(1, Math.floor(samples.length / RSS_POINTS));
  const picked = samples.filter((_, i) => i % step === 0 || i === samples.length - 1);
  const mb = (n: number): string => (n / MiB).toFixed(0);
  return picked.map((p) => `${Math.round(p.atMs / 1000)}s ${mb(p.bytes)} (${mb(p.anonBytes)}+${mb(p.fileBytes)})`).join(', ') + ' (MiB: RSS (anon+file))';
}
