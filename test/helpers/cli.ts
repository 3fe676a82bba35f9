// Running the compiled snapfs CLI (and other programs) from tests.
//
// Always asynchronous: FUSE tests serve the mount from this very process's
// event loop in some setups, and a blocking spawnSync would deadlock them.

import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../../lib/platform/native.js';

export interface RunOptions {
  /** Added to (and overriding) the inherited environment. */
  env?: Record<string, string>;
  /** Written to stdin, which is then closed. Without it stdin is closed at once. */
  input?: string;
  /** Kill the process with SIGKILL after this long and throw; default 5 minutes. */
  timeoutMs?: number;
  /** Resolve instead of throwing when the exit code is not 0. */
  allowFail?: boolean;
  cwd?: string;
}

export interface RunResult {
  /** Exit code, or -1 when the process was ended by a signal. */
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON when args include '--json' and it parses. */
  json?: any;
}

const DEFAULT_TIMEOUT_MS = 5 * 60 * 1000;

/** Path of the compiled CLI entry point. */
export function cliPath(): string {
  return join(projectRoot(), 'dist', 'cli', 'main.js');
}

// Children still running when the test process exits would outlive it (a FUSE
// daemon keeps its mount busy), so kill them on the way out.
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.on('exit', () => live.delete(child));
  return child;
}

function describe(command: string, args: string[]): string {
  return [command, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/**
 * Runs any program to completion, collecting its output. Throws (with stderr
 * in the message) on a non-zero exit unless allowFail, and always on timeout
 * or when the program cannot be started.
 */
export function runProcess(command: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(command, args, {
      cwd: opts.cwd,
      env: childEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    }));
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    // A child that exits without reading its input makes the write fail with EPIPE; that is not our error.
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input ?? '');

    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);

    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${describe(command, args)}: ${e.message}`, { cause: e }));
    });
    // 'close' rather than 'exit': it fires after stdout/stderr are fully read.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        code: code ?? -1,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (args.includes('--json')) {
        try {
          result.json = JSON.parse(result.stdout);
        } catch {
          // left undefined: the test asserting on json will say so
        }
      }
      const failed = timedOut || (result.code !== 0 && !opts.allowFail);
      if (!failed) return resolve(result);
      const why = timedOut
        ? `timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`
        : `exited with ${signal ? `signal ${signal}` : `code ${result.code}`}`;
      reject(Object.assign(
        new Error(`${describe(command, args)} ${why}\n--- stderr ---\n${result.stderr}--- stdout ---\n${result.stdout.slice(-4000)}`),
        { result },
      ));
    });
  });
}

/**
 * The environment for programs under test: ours minus tap's process hooks, which it
 * passes down through NODE_OPTIONS and which change how a child node process exits.
 * The CLI must be tested as users run it.
 */
export function childEnv(extra?: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of Object.keys(env)) if (k.startsWith('_TAPJS_') || (k === 'NODE_OPTIONS' && !extra?.NODE_OPTIONS)) delete env[k];
  return env;
}

/** Runs `node dist/cli/main.js ...args` to completion; see runProcess. */
export function runSnapfs(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runProcess(process.execPath, [cliPath(), ...args], opts);
}

/** A running CLI process whose output so far can be read at any time. */
export type SnapfsChild = ChildProcess & { output(): { stdout: string; stderr: string } };

/**
 * Starts the CLI and returns at once, for long-running commands (mount) that
 * the test stops itself. Output is drained continuously (a full pipe would
 * block the child) and kept for output(), e.g. to print on failure; callers
 * may also listen on stdout/stderr themselves. The child is killed if still
 * alive when the test process exits.
 */
export function spawnSnapfs(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): SnapfsChild {
  return spawnNode(cliPath(), args, opts);
}

/**
 * Starts `node SCRIPT ...args` the way spawnSnapfs starts the CLI. With `ipc`, the child
 * also gets a message channel (process.send / 'message' on both sides).
 */
export function spawnNode(script: string, args: string[], opts: { env?: Record<string, string>; cwd?: string; ipc?: boolean } = {}): SnapfsChild {
  const child = track(spawn(process.execPath, [script, ...args], {
    cwd: opts.cwd,
    env: childEnv(opts.env),
    stdio: opts.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  }));
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  return Object.assign(child, {
    output: () => ({ stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }),
  });
}

/** A fresh empty directory under the OS temp dir, removed when test `t` ends. */
export async function tmpDir(t: any, prefix: string): Promise<string> {
  const dir = await fsp.mkdtemp(join(tmpdir(), prefix.endsWith('-') ? prefix : prefix + '-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Whether `path` lies on a tmpfs, whose pages are the files themselves: no page cache to leave. */
export function onTmpfs(path: string): boolean {
  const TMPFS_MAGIC = 0x01021994;
  return statfsSync(path).type === TMPFS_MAGIC;
}
