// Machine facts and Markdown tables for the benchmark reports.

import fs from 'node:fs';
import os from 'node:os';
import { run, which, hasGnuTime, canDropCaches } from './exec.js';
import type { Tool } from './tools.js';

export function machineFacts(work: string, tools: Tool[]): Record<string, string> {
  const facts: Record<string, string> = {};
  facts.cpu = `${os.cpus()[0]?.model ?? '?'}; nproc ${run('nproc', []).trim()}`;
  facts.memory = `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`;
  facts.kernel = `${os.type()} ${os.release()}`;
  try {
    facts.os = /PRETTY_NAME="([^"]+)"/.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '?';
  } catch {
    facts.os = '?';
  }
  try {
    const df = run('df', ['-PT', work]).trim().split('\n').pop()!.split(/\s+/);
    const dev = df[0]!;
    const base = dev.replace('/dev/', '').replace(/[0-9]+$/, '');
    let rot = '?';
    try {
      rot = fs.readFileSync(`/sys/block/${base}/queue/rotational`, 'utf8').trim() === '1' ? 'rotational' : 'non-rotational';
    } catch {
      /* not a plain block device */
    }
    facts.disk = `${work} on ${dev} (${df[1]}, ${(Number(df[2]) / 1024 ** 2).toFixed(0)} GiB, reported ${rot})`;
  } catch {
    facts.disk = '?';
  }
  facts.node = process.version;
  facts.load = `load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} when the run started`;
  for (const t of tools) facts[t.name] = `${t.version}: ${t.settings}`;
  facts.caches = canDropCaches() ? 'cold runs drop the page cache first (sync; echo 3 > /proc/sys/vm/drop_caches)' : 'cannot drop caches (not root): every run is warm';
  facts.measurement = hasGnuTime() ? 'wall clock in node (including a final sync); CPU, peak RSS, disk input from GNU time' : 'wall clock in node; peak RSS polled from /proc';
  if (which('fusermount') || which('fusermount3')) facts.fuse = run('bash', ['-c', 'fusermount3 --version 2>&1 || fusermount --version 2>&1'], { allowFail: true }).trim().split('\n')[0]!;
  return facts;
}

export function factsMarkdown(facts: Record<string, string>): string {
  return Object.entries(facts)
    .map(([k, v]) => `- ${k}: ${v}`)
    .join('\n');
}

/** A Markdown table with padded columns (readable as plain text too). */
export function table(headers: string[], rows: Array<Array<string | number>>): string {
  // A '|' inside a cell (shell pipelines) would end the cell in Markdown.
  const cells = [headers, ...rows.map((r) => r.map(String))].map((r) => r.map((c) => c.replace(/\|/g, '\\|')));
  const widths = headers.map((_, i) => Math.max(3, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(cells[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}

export interface Target {
  name: string;
  measured: string;
  required: string;
  /** undefined: could not be evaluated (a tool or command is missing). */
  pass: boolean | undefined;
  note?: string;
}

export function targetsTable(targets: Target[]): string {
  return table(
    ['target', 'measured', 'required', 'result'],
    targets.map((t) => [t.name, t.measured, t.required, t.pass === undefined ? `n/a${t.note ? ` (${t.note})` : ''}` : t.pass ? 'PASS' : 'FAIL']),
  );
}
