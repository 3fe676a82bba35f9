// The mount server's memory over the run: VmRSS sampled from /proc, and the rule that
// says whether it stayed bounded.
//
// Rule: the largest sample may exceed the largest of the first third of the run by at
// most half, plus 50 MiB (caches filling up and the index growing with the repository
// are fine; steady growth is not), and never RSS_CAP_BYTES. The server's caches are
// bounded at about 34 MiB together (lib/read/vfs.ts), so a healthy server stays far below.

import { promises as fsp } from 'node:fs';

const MiB = 1024 * 1024;
export const RSS_CAP_BYTES = 512 * MiB;
export const RSS_GROWTH_FACTOR = 1.5;
export const RSS_GROWTH_SLACK_BYTES = 50 * MiB;

export interface RssSample {
  /** Milliseconds since the sampler started. */
  atMs: number;
  /** VmRSS: what the rule judges. */
  bytes: number;
  /** RssAnon: the heap and malloc, memory only the process holds. */
  anonBytes: number;
  /** RssFile: mapped file pages resident: page cache, shared and reclaimable. Mostly
   * Node's own executable (~41 MiB of /usr/bin/node's code and data here), then the
   * libraries and addons, then the pages of the LMDB index the server has read (~3 MiB). */
  fileBytes: number;
}

/** The resident memory of `pid` from /proc, or undefined once the process is gone. */
export async function rssOf(pid: number): Promise<Omit<RssSample, 'atMs'> | undefined> {
  let status: string;
  try {
    status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kib = (field: string): number | undefined => {
    const v = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1];
    return v === undefined ? undefined : Number(v) * 1024;
  };
  const bytes = kib('VmRSS');
  return bytes === undefined ? undefined : { bytes, anonBytes: kib('RssAnon') ?? 0, fileBytes: kib('RssFile') ?? 0 };
}

/** Samples a process's RSS every `everyMs` until stop(). */
export class RssSampler {
  readonly samples: RssSample[] = [];
  private readonly started = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number, everyMs: number) {
    void this.sample();
    this.timer = setInterval(() => void this.sample(), everyMs);
  }

  private async sample(): Promise<void> {
    const atMs = Date.now() - this.started;
    const rss = await rssOf(this.pid);
    if (rss !== undefined) this.samples.push({ atMs, ...rss });
  }

  stop(): RssSample[] {
    clearInterval(this.timer);
    return this.samples.sort((a, b) => a.atMs - b.atMs);
  }
}

export interface RssSummary {
  samples: number;
  min: number;
  median: number;
  max: number;
  firstThird: { median: number; max: number };
  lastThird: { median: number; max: number };
  /** The largest RSS the rule allows for this run. */
  limit: number;
  bounded: boolean;
}

export function summarizeRss(samples: RssSample[]): RssSummary | undefined {
  if (!samples.length) return undefined;
  const span = samples[samples.length - 1]!.atMs;
  const first = samples.filter((s) => s.atMs <= span / 3).map((s) => s.bytes);
  const last = samples.filter((s) => s.atMs >= (2 * span) / 3).map((s) => s.bytes);
  const all = samples.map((s) => s.bytes);
  const max = Math.max(...all);
  const limit = Math.min(RSS_CAP_BYTES, RSS_GROWTH_FACTOR * Math.max(...first) + RSS_GROWTH_SLACK_BYTES);
  return {
    samples: all.length,
    min: Math.min(...all),
    median: median(all),
    max,
    firstThird: { median: median(first), max: Math.max(...first) },
    lastThird: { median: median(last), max: Math.max(...last) },
    limit,
    bounded: max <= limit,
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
