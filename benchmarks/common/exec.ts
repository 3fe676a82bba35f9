// Running and measuring programs: wall time, CPU, peak RSS and disk input of a command
// (GNU time when installed, /proc polling otherwise), page-cache dropping, RSS sampling.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFail?: boolean;
  /** Run `sync` after the command and include it in the wall time (so write-back is paid for). */
  sync?: boolean;
  timeoutMs?: number;
}

export interface Measured {
  command: string;
  exitCode: number;
  wallS: number;
  userS: number;
  sysS: number;
  /** Peak resident set of the largest process in the tree, KiB. */
  maxRssKiB: number;
  /** Bytes read from block devices (ru_inblock * 512): meaningful on a cold cache. */
  diskReadBytes: number;
  /**
   * CPU seconds used by other processes on the machine while this ran (system-wide busy
   * time from /proc/stat minus this command's). The checkout is shared: tests and compiles
   * of other people show up here, and make the figure unreliable when large.
   */
  otherCpuS: number;
  stdout: string;
  stderr: string;
}

const GNU_TIME = '/usr/bin/time';
let gnuTime: boolean | undefined;

export function hasGnuTime(): boolean {
  if (gnuTime === undefined) {
    const r = spawnSync(GNU_TIME, ['-f', '%M', 'true'], { encoding: 'utf8' });
    gnuTime = r.status === 0 && /^\d+\s*$/m.test(r.stderr);
  }
  return gnuTime;
}

export function describe(cmd: string, args: string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

let priority: string[] = [];

/**
 * Runs measured commands (and mount servers) at a raised CPU and I/O priority
 * (`nice -n -10 ionice -c 2 -n 0`; root only). On a shared machine this keeps other
 * people's test runs from taking half of the two cores in the middle of a measurement;
 * every tool and floor gets the same treatment. Other processes are not touched.
 */
export function setPriority(on: boolean): boolean {
  priority = on && process.getuid?.() === 0 && which('nice') && which('ionice') ? ['nice', '-n', '-10', 'ionice', '-c', '2', '-n', '0'] : [];
  if (priority.length > 0) {
    // With autogroup scheduling (sched_autogroup_enabled), nice only orders processes of
    // one session; between sessions the autogroup's own nice value counts. Raise ours (this
    // process's session: the benchmark and everything it starts), never anyone else's.
    try {
      fs.writeFileSync('/proc/self/autogroup', '-10');
    } catch {
      /* no autogroups here */
    }
  }
  return priority.length > 0;
}

export function priorityPrefix(): string[] {
  return priority;
}

let quietWaitMs = 0;
let quietLog: (s: string) => void = () => {};
export const quietStats = { waited: 0, waitedS: 0, gaveUp: 0 };

/**
 * Before every measurement, wait (up to `seconds`) for a 2-second window in which the rest
 * of the machine used less than a quarter of one core: other people's test runs on this
 * shared checkout otherwise dominate the figures. 0 disables the wait.
 */
export function setQuietWait(seconds: number, log: (s: string) => void = () => {}): void {
  quietWaitMs = seconds * 1000;
  quietLog = log;
}

export async function awaitQuiet(): Promise<void> {
  if (quietWaitMs <= 0) return;
  const start = Date.now();
  let warned = false;
  for (;;) {
    const b0 = systemBusySeconds();
    const s0 = process.cpuUsage();
    await sleep(2000);
    const other = systemBusySeconds() - b0 - (() => {
      const u = process.cpuUsage(s0);
      return (u.user + u.system) / 1e6;
    })();
    if (other < 0.5) break; // < 0.25 core over 2 s
    if (Date.now() - start > quietWaitMs) {
      quietStats.gaveUp++;
      quietLog(`  machine still busy (${(other / 2).toFixed(2)} cores used by others) after ${quietWaitMs / 1000} s: measuring anyway`);
      break;
    }
    if (!warned) {
      quietLog(`  waiting for other processes to go quiet (${(other / 2).toFixed(2)} cores busy)...`);
      warned = true;
    }
  }
  const waited = (Date.now() - start) / 1000 - 2;
  if (waited > 1) {
    quietStats.waited++;
    quietStats.waitedS += waited;
  }
}

/** Runs a command to completion, measuring it. */
export async function measure(cmd: string, args: string[], opts: RunOptions = {}): Promise<Measured> {
  await awaitQuiet();
  const command = describe(cmd, args);
  const timeFile = path.join(os.tmpdir(), `snapfs-bench-time-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const useTime = hasGnuTime();
  const inner = [...priority, cmd, ...args];
  const full = useTime ? [GNU_TIME, '-f', '%e %U %S %M %I', '-o', timeFile, ...inner] : inner;
  const busy0 = systemBusySeconds();
  const self0 = process.cpuUsage();
  const started = performance.now();
  const child = spawn(full[0]!, full.slice(1), {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const poll = useTime ? undefined : new RssSampler(child.pid!, 100, true);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  let timer: NodeJS.Timeout | undefined;
  if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
  const exitCode = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
  if (timer) clearTimeout(timer);
  if (opts.sync) spawnSync('sync');
  const wallS = (performance.now() - started) / 1000;
  poll?.stop();
  const stdout = Buffer.concat(out).toString('utf8');
  let stderr = Buffer.concat(err).toString('utf8');
  const busy = systemBusySeconds() - busy0;
  const self = process.cpuUsage(self0);
  const m: Measured = { command, exitCode, wallS, userS: NaN, sysS: NaN, maxRssKiB: poll?.maxKiB ?? NaN, diskReadBytes: NaN, otherCpuS: NaN, stdout, stderr };
  if (useTime) {
    try {
      const lines = fs.readFileSync(timeFile, 'utf8').trim().split('\n');
      const f = lines[lines.length - 1]!.split(' ').map(Number);
      [, m.userS, m.sysS, m.maxRssKiB] = f as [number, number, number, number];
      m.diskReadBytes = f[4]! * 512;
      if (lines.length > 1) stderr += lines.slice(0, -1).join('\n'); // "Command exited with non-zero status"
    } catch {
      /* killed before time wrote its report */
    }
    fs.rmSync(timeFile, { force: true });
  }
  m.stderr = stderr;
  if (Number.isFinite(m.userS)) m.otherCpuS = Math.max(0, busy - m.userS - m.sysS - (self.user + self.system) / 1e6);
  if (exitCode !== 0 && !opts.allowFail) {
    throw new Error(`${command} exited with ${exitCode}\n${stderr.slice(-4000)}`);
  }
  return m;
}

/** Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat. */
export function systemBusySeconds(): number {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0);
    return busy / 100; // USER_HZ
  } catch {
    return NaN;
  }
}

/** A short note when other processes used noticeable CPU during a measurement. */
export function noise(m: Measured | undefined): string {
  if (!m || !Number.isFinite(m.otherCpuS)) return '';
  const share = m.otherCpuS / (m.wallS * os.cpus().length);
  return share > 0.05 ? `${m.otherCpuS.toFixed(1)} s (${Math.round(share * 100)}%)` : '';
}

/** Measures a shell pipeline (`bash -c`), e.g. the `find | xargs cat` floor. */
export function measureShell(script: string, opts: RunOptions = {}): Promise<Measured> {
  return measure('bash', ['-o', 'pipefail', '-c', script], opts);
}

/** Runs a command quietly and returns stdout (throws on failure). */
export function run(cmd: string, args: string[], opts: RunOptions = {}): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.error) throw r.error;
  if (r.status !== 0 && !opts.allowFail) throw new Error(`${describe(cmd, args)} exited with ${r.status}\n${r.stderr}`);
  return r.stdout;
}

export function which(cmd: string): string | undefined {
  const r = spawnSync('bash', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

let dropWorks: boolean | undefined;

/** `sync; echo 3 > /proc/sys/vm/drop_caches`. Returns false when not permitted (then runs are warm). */
export function dropCaches(): boolean {
  spawnSync('sync');
  if (dropWorks === false) return false;
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    dropWorks = true;
  } catch {
    dropWorks = false;
  }
  return dropWorks;
}

export function canDropCaches(): boolean {
  if (dropWorks === undefined) dropCaches();
  return dropWorks!;
}

/** Samples VmRSS (and remembers VmHWM) of a process from /proc while it runs. */
export class RssSampler {
  maxKiB = 0;
  samples = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly pid: number,
    intervalMs = 200,
    private readonly useHwm = false,
  ) {
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
    this.sample();
  }

  sample(): void {
    try {
      const s = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
      const m = (this.useHwm ? /VmHWM:\s+(\d+)/ : /VmRSS:\s+(\d+)/).exec(s);
      if (m) {
        this.maxKiB = Math.max(this.maxKiB, Number(m[1]));
        this.samples++;
      }
    } catch {
      /* gone */
    }
  }

  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
}

/** Starts a long-running process (a FUSE server in the foreground) and keeps a handle on it. */
export function startDaemon(cmd: string, args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; log?: string } = {}): ChildProcess {
  const logFd = opts.log ? fs.openSync(opts.log, 'a') : 'ignore';
  const argv = [...priority, cmd, ...args];
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', logFd, logFd],
  });
  if (typeof logFd === 'number') fs.closeSync(logFd);
  return child;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** True when `dir` is a mount point (per /proc/self/mountinfo). */
export function isMountPoint(dir: string): boolean {
  const abs = path.resolve(dir);
  const info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === abs.replace(/ /g, '\\040'));
}

/** Unmounts a FUSE mount point (fusermount -u, then umount -l as a last resort). */
export function unmount(dir: string): void {
  if (!isMountPoint(dir)) return;
  for (const [cmd, args] of [
    ['fusermount', ['-u', dir]],
    ['fusermount3', ['-u', dir]],
    ['umount', [dir]],
    ['umount', ['-l', dir]],
  ] as Array<[string, string[]]>) {
    if (!which(cmd)) continue;
    spawnSync(cmd, args, { stdio: 'ignore' });
    if (!isMountPoint(dir)) return;
  }
}
