// Shared checks of the fault tests: a command may fail, but only cleanly, and nothing that
// reads a snapshot ever hands out wrong bytes.

import { promises as fsp } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, relative } from 'node:path';
import { RunResult, cliPath, runProcess, runSnapfs } from './cli.js';

/** Exit codes a command may end with on a damaged repository (cli/exit-codes.ts). */
export const CLEAN_EXITS = [0, 3, 10, 11, 12, 13, 14, 15, 16, 17, 18];

export interface CleanOptions {
  /**
   * Signals the command may die of: only for damage inside LMDB's data pages, which LMDB
   * trusts (docs/reliability.md); every such case is counted in `crashes`.
   */
  signals?: string[];
  crashes?: string[];
}

// Diagnostics liblmdb itself prints to stderr when it meets a damaged page (not snapfs's words).
const LMDB_NOISE = /^(internal error, index points to a \w+ page!\?|page \d+ not found error)$/gm;

/**
 * Asserts that a finished command did not crash: no signal, no "internal error", no stack
 * trace, an exit code from `allowed`, and a "snapfs: " message on stderr when it failed.
 */
export function assertClean(t: any, r: RunResult, label: string, allowed: number[] = CLEAN_EXITS, opts: CleanOptions = {}): void {
  if (r.signal !== null && opts.signals?.includes(r.signal)) {
    opts.crashes?.push(`${label}: ${r.signal}`);
    return;
  }
  const stderr = r.stderr.replace(LMDB_NOISE, '');
  const ok = r.signal === null && allowed.includes(r.code) && !/internal error/.test(stderr) && !/^\s{4}at /m.test(stderr);
  t.ok(ok, `${label}: exit ${r.signal ?? r.code} (allowed ${allowed.join('/')}), no crash`, ok ? undefined : { stderr: r.stderr.slice(0, 3000), stdout: r.stdout.slice(0, 1000) });
  if (r.code !== 0 && r.code !== 3) {
    // check reports what it found on stdout (its --json report has ok: false); anything else says why on stderr.
    // (liblmdb's own 'Write error: ...' lacks a newline, so ours may follow it on its line.)
    const reported = /snapfs: \S/.test(r.stderr) || r.json?.ok === false || /problem\(s\) found/.test(r.stdout);
    t.ok(reported, `${label}: says why it failed`, reported ? undefined : { stderr: r.stderr.slice(0, 2000), stdout: r.stdout.slice(0, 1000) });
  }
}

/** How many snapshot records the repository holds (files, whatever the index says). */
async function snapshotRecords(repo: string): Promise<number> {
  try {
    return (await fsp.readdir(join(repo, 'snapshots'))).filter((n) => n.endsWith('.json') && !n.startsWith('.')).length;
  } catch {
    return -1; // no directory: damage a test made on purpose
  }
}

/**
 * Runs `backup` and holds it to "a snapshot, or a clean failure": assertClean, then exit 0
 * or 3 (partial) must have added exactly one snapshot record and any other exit none. A
 * backup that says success without its snapshot is the worst failure a backup tool has.
 * (After a signal either is possible: the commit may have happened just before.)
 */
export async function backupHonestly(t: any, repo: string, args: string[], label: string, allowed: number[], opts: CleanOptions = {}): Promise<RunResult> {
  const before = await snapshotRecords(repo);
  const r = await snapfs(['backup', repo, ...args]);
  assertClean(t, r, label, allowed, opts);
  if (r.signal === null && before >= 0) {
    const made = (await snapshotRecords(repo)) - before;
    const expected = r.code === 0 || r.code === 3 ? 1 : 0;
    t.equal(made, expected, `${label}: exit ${r.code} with ${made} new snapshot(s)`, made === expected ? undefined : { stderr: r.stderr.slice(0, 2000) });
  }
  return r;
}

/** Runs the CLI, never throwing on a non-zero exit. */
export function snapfs(args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return runSnapfs(args, { allowFail: true, timeoutMs });
}

export function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Relative path -> sha256 of every regular file under `root`. */
export async function contentManifest(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await fsp.readdir(root, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    out.set(relative(root, p), sha(await fsp.readFile(p)));
  }
  return out;
}

/**
 * Restores `spec` into a fresh directory and holds it to "right bytes or a clean failure":
 * exit 0 and exactly the expected files, or exit 15 and every regular file it did leave
 * holds the expected bytes. Returns the exit code.
 */
export async function restoreHonestly(t: any, repo: string, spec: string, expected: Map<string, string>, out: string, opts: CleanOptions = {}): Promise<number> {
  await fsp.rm(out, { recursive: true, force: true });
  const r = await snapfs(['restore', repo, spec, out]);
  assertClean(t, r, `restore ${spec}`, [0, 14, 15], opts);
  let got = new Map<string, string>();
  try {
    got = await contentManifest(out);
  } catch {
    // nothing restored
  }
  const wrong = [...got].filter(([p, h]) => expected.get(p) !== h).map(([p]) => p);
  t.same(wrong, [], `restore ${spec} (exit ${r.code}): no file with wrong content`);
  if (r.code === 0) t.equal(got.size, expected.size, `restore ${spec}: every file restored`);
  await fsp.rm(out, { recursive: true, force: true });
  return r.code;
}

/** `cat` of one file: exit 0 with exactly the expected bytes, or a clean exit 15. */
export async function catHonestly(t: any, repo: string, spec: string, expected: string, opts: CleanOptions = {}): Promise<number> {
  // runProcess decodes stdout as UTF-8: the raw bytes go through a file instead.
  const tmp = join(await fsp.mkdtemp('/tmp/snapfs-cat-'), 'out');
  const res = await runProcess('/bin/sh', ['-c', 'exec "$0" "$1" cat "$2" "$3" > "$4"', process.execPath, cliPath(), repo, spec, tmp], { allowFail: true, timeoutMs: 60_000 });
  assertClean(t, res, `cat ${spec}`, [0, 15], opts);
  if (res.code === 0) t.equal(sha(await fsp.readFile(tmp)), expected, `cat ${spec}: the right bytes`);
  await fsp.rm(join(tmp, '..'), { recursive: true, force: true });
  return res.code;
}

/** Copies a repository (cp -a) to a new directory. */
export async function copyRepo(from: string, to: string): Promise<string> {
  await runProcess('cp', ['-a', from, to]);
  return to;
}
