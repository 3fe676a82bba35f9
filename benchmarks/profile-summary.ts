// Summarises V8 CPU profiles (node --cpu-prof; one .cpuprofile per thread, workers included):
// self and inclusive time per function, and self time per file/package.
//
//   node --cpu-prof --cpu-prof-dir=/tmp/prof dist/cli/main.js backup REPO DIR --source s
//   node dist/benchmarks/profile-summary.js /tmp/prof [--top 30]

import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from './common/args.js';
import { table } from './common/report.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const META = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

function shortUrl(url: string): string {
  if (!url) return '';
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = u.slice(nm + 14).split('/');
    return `npm:${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const dist = u.indexOf('/dist/');
  if (dist >= 0) return u.slice(dist + 6);
  return u.startsWith('node:') ? u : path.basename(u);
}

function key(cf: CallFrame): string {
  const name = cf.functionName || '(anonymous)';
  if (META.has(name)) return name;
  const where = shortUrl(cf.url);
  return where ? `${name} ${where}:${cf.lineNumber + 1}` : `${name} (native)`;
}

function fileKey(cf: CallFrame): string {
  const name = cf.functionName || '(anonymous)';
  if (META.has(name)) return name;
  return shortUrl(cf.url) || '(native / builtins)';
}

export interface ProfileSummary {
  thread: string;
  totalMs: number;
  idleMs: number;
  self: Map<string, number>;
  inclusive: Map<string, number>;
  files: Map<string, number>;
}

export function analyzeProfile(file: string): ProfileSummary {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const files = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0) / 1000; // ms; a sample's time runs to the next
    const node = byId.get(p.samples[i]!)!;
    total += dt;
    const k = key(node.callFrame);
    if (k === '(idle)') idle += dt;
    self.set(k, (self.get(k) ?? 0) + dt);
    const fk = fileKey(node.callFrame);
    files.set(fk, (files.get(fk) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const kk = key(byId.get(id)!.callFrame);
      if (seen.has(kk)) continue;
      seen.add(kk);
      inclusive.set(kk, (inclusive.get(kk) ?? 0) + dt);
    }
  }
  return { thread: path.basename(file), totalMs: total, idleMs: idle, self, inclusive, files };
}

function top(m: Map<string, number>, n: number, skip: (k: string) => boolean = () => false): Array<[string, number]> {
  return [...m.entries()].filter(([k]) => !skip(k)).sort((a, b) => b[1] - a[1]).slice(0, n);
}

/** Markdown summary of every .cpuprofile in `dir` (busiest thread first). */
export function summarizeProfiles(dir: string, n = 25): string {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(dir, f));
  if (files.length === 0) return `(no .cpuprofile in ${dir})`;
  const sums = files.map(analyzeProfile).sort((a, b) => b.totalMs - b.idleMs - (a.totalMs - a.idleMs));
  const out: string[] = [];
  out.push(
    table(
      ['thread profile', 'sampled s', 'idle s', 'busy s'],
      sums.map((s) => [s.thread, (s.totalMs / 1000).toFixed(2), (s.idleMs / 1000).toFixed(2), ((s.totalMs - s.idleMs) / 1000).toFixed(2)]),
    ),
  );
  for (const s of sums) {
    const busy = s.totalMs - s.idleMs;
    if (busy < 50) continue;
    const pct = (v: number): string => `${((v / busy) * 100).toFixed(1)}%`;
    out.push('');
    out.push(`### ${s.thread}: ${(busy / 1000).toFixed(2)} s busy (percentages of busy time)`);
    out.push('');
    out.push('Self time by function:');
    out.push('');
    out.push(table(['function', 'self ms', 'self %'], top(s.self, n, (k) => k === '(idle)').map(([k, v]) => [k, v.toFixed(0), pct(v)])));
    out.push('');
    out.push('Self time by file / package:');
    out.push('');
    out.push(table(['file', 'self ms', 'self %'], top(s.files, 15, (k) => k === '(idle)').map(([k, v]) => [k, v.toFixed(0), pct(v)])));
    out.push('');
    out.push('Inclusive time (project code and packages):');
    out.push('');
    out.push(
      table(
        ['function', 'incl ms', 'incl %'],
        top(s.inclusive, n, (k) => META.has(k) || k.startsWith('(anonymous) node:') || / node:internal/.test(k)).map(([k, v]) => [k, v.toFixed(0), pct(v)]),
      ),
    );
  }
  return out.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const argv = process.argv.slice(2);
  const dir = argv.find((a) => !a.startsWith('--'));
  const args = parseArgs(argv.filter((a) => a !== dir), { top: '25' });
  if (!dir) {
    console.error('usage: profile-summary.js DIR [--top N]');
    process.exit(2);
  }
  console.log(summarizeProfiles(dir, Number(args.top)));
}
