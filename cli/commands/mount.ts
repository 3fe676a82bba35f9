// snapfs mount / umount: the read-only FUSE view of every snapshot.
//
// Without --foreground, `mount` starts itself again as a detached process that serves the
// mount (with --foreground), waits until that process reports over an IPC channel that
// the kernel has the mount (or why it failed), and returns. The serving process keeps a
// pid file in REPO/run/ and a log next to it. The repository, the file system and FUSE
// are loaded when a mount command runs, not at the start of every snapfs command.
import type { Argv } from 'yargs';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import type { Repository } from '../../lib/store/repository.js';
import type { Vfs } from '../../lib/read/vfs.js';
import type { MountedFs } from '../../lib/fuse/mount.js';
import { SnapfsError, ErrorCode } from '../../lib/errors.js';
import { Output } from '../output.js';
import { completed } from '../completion.js';

const DAEMON_ENV = 'SNAPFS_MOUNT_DAEMON';
const READY_TIMEOUT_MS = 120_000;

interface MountArgs {
  repo: string;
  mnt: string;
  'allow-other': boolean;
  foreground: boolean;
  nfs: boolean;
  json: boolean;
  debug: boolean;
}

interface ReadyInfo {
  mountpoint: string;
  repository: string;
  pid: number;
  pidFile: string;
  options: string[];
  log?: string;
}

type DaemonMessage = { type: 'ready'; info: ReadyInfo } | { type: 'error'; code: ErrorCode | 'INTERNAL'; message: string };

/** Run-dir file names for a mount point: readable, and unique per path. */
function runFileBase(mnt: string): string {
  const tag = path.basename(mnt).replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40) || 'root';
  return `mount-${tag}-${createHash('sha256').update(mnt).digest('hex').slice(0, 12)}`;
}

function timestamp(): string {
  return new Date().toISOString();
}

export function register(y: Argv): Argv {
  return y
    .command(
      'mount <repo> <mnt>',
      'show every snapshot as read-only files under MNT (FUSE)',
      (a) =>
        a
          .positional('repo', { type: 'string', demandOption: true })
          .positional('mnt', { type: 'string', demandOption: true, describe: 'mount point: an existing empty directory' })
          .option('allow-other', { type: 'boolean', default: false, describe: 'let other users in (each file\'s stored mode, uid and gid still apply)' })
          .option('foreground', { type: 'boolean', default: false, describe: 'serve from this process until Ctrl-C / SIGTERM / unmount' })
          .option('nfs', { type: 'boolean', default: false, describe: 'for re-export over NFS: keep node ids valid (noforget; see docs/mount.md)' })
          .option('json', { type: 'boolean', default: false })
          .option('debug', { type: 'boolean', default: false, hidden: true }),
      async (argv) => {
        const args = argv as unknown as MountArgs;
        if (args.foreground) await serve(args);
        else await startDaemon(args);
      },
    )
    .command(
      'umount <mnt>',
      'unmount a snapfs mount (its serving process then exits)',
      (a) => a.positional('mnt', { type: 'string', demandOption: true }).option('json', { type: 'boolean', default: false }),
      async (argv) => {
        const out = new Output({ json: argv.json });
        const { canonicalMountPoint, findMount, unmountPath } = await import('../../lib/fuse/mount.js');
        const mnt = await canonicalMountPoint(argv.mnt);
        const m = await findMount(mnt);
        if (!m) throw new SnapfsError('INVALID_ARGUMENT', `${mnt} is not mounted`);
        if (m.fsType !== 'fuse.snapfs') throw new SnapfsError('INVALID_ARGUMENT', `${mnt} is not a snapfs mount (it is ${m.fsType})`);
        const how = await unmountPath(mnt, true);
        out.info(how === 'detached' ? `${mnt} was busy: detached; it disappears when the last process using it lets go` : `unmounted ${mnt}`);
        out.json({ unmounted: mnt, lazy: how === 'detached' });
      },
    );
}

/**
 * V8 flags of the serving process (the command's own flags follow and win). A 2 MiB young
 * generation instead of 16 MiB: requests allocate little that lives, so collections stay
 * cheap, and `ls -lR` of the benchmark corpus peaks at ~120 MiB instead of ~145 MiB.
 */
export const SERVER_NODE_FLAGS = ['--max-semi-space-size=2'];

/**
 * glibc malloc settings of the serving process (unless set already). A fixed mmap
 * threshold: buffers of 1 MiB and more are mapped and unmapped, not carved out of the
 * heap, whose freed holes glibc rarely returns (left to itself, glibc raises the threshold
 * after the first such free). Not lower: every page of a fresh mapping faults when first
 * written, which on a virtual machine costs more than the bytes' decompression; at
 * 128 KiB (every chunk mapped afresh) a `tar` of the benchmark snapshot took 1.0-1.6 s
 * more server CPU for ~5 MiB less peak RSS (docs/benchmarks.md, 2026-12-07 morning).
 */
export const SERVER_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '1048576' };

/**
 * V8 flags the serving process sets on itself, so that a server started any way (the
 * background one, `--foreground` under a service manager) runs with them; NODE_OPTIONS
 * does not pass them. `--optimize-for-size` makes V8 grow its old generation by at most
 * 1.3x what the last full collection kept and compact pages that are a fifth free (left
 * to itself: up to 4x, and only pages mostly free). The server's caches are LRUs of
 * small objects, whose churn leaves pages part-used: over the 10-minute soak its heap
 * stayed at 26-36 MiB committed instead of growing to 46-52 MiB, for no measured cost in
 * the mount benchmark (docs/reliability.md).
 */
export const SERVER_SELF_V8_FLAGS = ['--optimize-for-size'];

/** How often the serving process returns free heap pages to the kernel (serve). */
const MALLOC_TRIM_INTERVAL_MS = 10_000;

/** Starts the serving process and returns once the mount is ready. */
async function startDaemon(args: MountArgs): Promise<void> {
  const out = new Output({ json: args.json });
  const repository = path.resolve(args.repo);
  const { canonicalMountPoint } = await import('../../lib/fuse/mount.js');
  const { Repository } = await import('../../lib/store/repository.js');
  const mnt = await canonicalMountPoint(args.mnt);
  // Fail fast, in this process, on what is easy to check.
  const repo = await Repository.open(repository, { readOnly: true });
  const runDir = repo.layout.run;
  await repo.close();
  await fsp.mkdir(runDir, { recursive: true, mode: 0o700 });
  const logPath = path.join(runDir, `${runFileBase(mnt)}.log`);
  const log = await fsp.open(logPath, 'a', 0o600);
  const cli = fileURLToPath(new URL('../main.js', import.meta.url));
  const childArgs = [cli, 'mount', repository, mnt, '--foreground'];
  if (args['allow-other']) childArgs.push('--allow-other');
  if (args.nfs) childArgs.push('--nfs');
  if (args.debug) childArgs.push('--debug');
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...process.execArgv, ...childArgs], {
    detached: true,
    cwd: '/',
    stdio: ['ignore', log.fd, log.fd, 'ipc'],
    env: { ...SERVER_MALLOC_ENV, ...process.env, [DAEMON_ENV]: '1' },
  });
  await log.close();
  const msg = await new Promise<DaemonMessage>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new SnapfsError('IO_ERROR', `the mount process (pid ${child.pid}) did not report ready within ${READY_TIMEOUT_MS / 1000} s; see ${logPath}`));
    }, READY_TIMEOUT_MS);
    child.once('message', (m) => {
      clearTimeout(timer);
      resolve(m as DaemonMessage);
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new SnapfsError('IO_ERROR', `cannot start the mount process: ${err.message}`, { cause: err }));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new SnapfsError('IO_ERROR', `the mount process exited (${signal ?? `code ${code}`}) before the mount was ready; see ${logPath}`));
    });
  });
  child.removeAllListeners('exit');
  if (child.connected) child.disconnect();
  child.unref();
  if (msg.type === 'error') {
    throw new SnapfsError(msg.code === 'INTERNAL' ? 'IO_ERROR' : msg.code, msg.message);
  }
  const info = { ...msg.info, log: logPath };
  out.info(`mounted ${info.repository} at ${info.mountpoint} (pid ${info.pid}); unmount with 'snapfs umount ${info.mountpoint}'`);
  out.json({ mounted: info });
}

/** Serves the mount from this process until a signal or an unmount. */
async function serve(args: MountArgs): Promise<void> {
  const out = new Output({ json: args.json });
  const daemon = process.env[DAEMON_ENV] === '1' && typeof process.send === 'function';
  const log = (line: string): void => void process.stderr.write(`${timestamp()} snapfs mount: ${line}\n`);
  const report = (msg: DaemonMessage): Promise<void> =>
    new Promise((resolve) => {
      if (!daemon || !process.connected) return resolve();
      process.send!(msg, undefined, {}, () => {
        if (process.connected) process.disconnect();
        resolve();
      });
    });

  for (const flag of SERVER_SELF_V8_FLAGS) v8.setFlagsFromString(flag);
  const repository = path.resolve(args.repo);
  const { MountedFs, canonicalMountPoint, prepareMountPoint } = await import('../../lib/fuse/mount.js');
  const { Vfs } = await import('../../lib/read/vfs.js');
  const { Repository } = await import('../../lib/store/repository.js');
  const { trimMalloc } = await import('../../lib/platform/native.js');
  const mnt = await canonicalMountPoint(args.mnt);
  let repo: Repository | undefined;
  let vfs: Vfs | undefined;
  let mounted: MountedFs;
  try {
    repo = await Repository.open(repository, { readOnly: true });
    const { cleanedStale } = await prepareMountPoint(mnt);
    if (cleanedStale) log(`cleaned a stale mount at ${mnt} (its server had died)`);
    vfs = await Vfs.open(repo, { onWarning: log });
    mounted = await MountedFs.mount(vfs, mnt, { allowOther: args['allow-other'], nfs: args.nfs, log, debug: args.debug });
  } catch (err) {
    vfs?.close();
    await repo?.close().catch(() => undefined);
    const e = err as Error;
    await report({ type: 'error', code: err instanceof SnapfsError ? err.code : 'INTERNAL', message: e?.message ?? String(err) });
    throw err;
  }
  vfs.startPolling(1000);
  // Each thread's malloc arena keeps the pages of the buffers that thread freed (the
  // binding's readers free chunk-sized ones all the time): trimmed now and then, a mount
  // that serves for weeks holds what it uses, not its busiest moment's high-water mark.
  setInterval(() => trimMalloc(), MALLOC_TRIM_INTERVAL_MS).unref();

  const pidFile = path.join(repo.layout.run, `${runFileBase(mnt)}.pid`);
  const info: ReadyInfo = { mountpoint: mnt, repository, pid: process.pid, pidFile, options: mounted.options };
  try {
    await fsp.mkdir(repo.layout.run, { recursive: true, mode: 0o700 });
    await fsp.writeFile(pidFile, JSON.stringify({ ...info, started: timestamp() }) + '\n', { mode: 0o600 });
  } catch (err) {
    log(`cannot write pid file ${pidFile}: ${(err as Error).message}`);
  }

  let stopping = false;
  const stopped = new Promise<string>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      resolve(sig);
    };
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
    mounted.waitUntilGone().then(() => resolve('unmounted by someone else'));
    // A bug must not leave a dead mount behind ("Transport endpoint is not connected").
    const onCrash = (err: unknown): void => {
      log(`internal error: ${(err as Error)?.stack ?? String(err)}`);
      process.exitCode = 1;
      resolve('internal error');
    };
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
  });

  // kill -USR2 PID: one log line about memory, for diagnosing a long-running mount.
  process.on('SIGUSR2', () => {
    collectGarbage(); // so the line shows what the server keeps, not the garbage of the moment
    const m = process.memoryUsage();
    const mb = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
    log(`memory: rss ${mb(m.rss)}, heap ${mb(m.heapUsed)} of ${mb(m.heapTotal)}, external ${mb(m.external)}, buffers ${mb(m.arrayBuffers)}; heap spaces, MiB used/committed: ${heapSpaces()}; ${vfs!.openFiles} open files; ${vfs!.held.nodes} nodes held by the kernel (${mb(vfs!.held.bytes)}), ${vfs!.held.fromListings} references taken from listings; kernel requests: ${Object.entries(mounted.requestCounts()).map(([op, n]) => `${op} ${n}`).join(', ')}`);
  });
  log(`serving ${repository} at ${mnt} (pid ${process.pid}, options ${mounted.options.join(',')})`);
  if (daemon) await report({ type: 'ready', info });
  else if (args.json) process.stdout.write(JSON.stringify({ mounted: info }) + '\n');
  else out.info(`mounted ${repository} at ${mnt}; stop with Ctrl-C or 'snapfs umount ${mnt}'`);

  const reason = await stopped;
  try {
    await mounted.unmount();
  } catch (err) {
    log(`unmount failed: ${(err as Error).message}`);
    process.exitCode = 1;
  }
  vfs.close();
  await repo.close().catch(() => undefined);
  await fsp.rm(pidFile, { force: true }).catch(() => undefined);
  log(`unmounted ${mnt} (${reason})`);
  if (!daemon) {
    if (args.json) process.stdout.write(JSON.stringify({ unmounted: { mountpoint: mnt, reason } }) + '\n');
    else out.info(`unmounted ${mnt}`);
  }
  // fuse-native's worker thread may still hold libuv handles: end explicitly.
  completed();
  process.exit(process.exitCode ?? 0);
}

/** V8's heap by space, used of committed in MiB, for the SIGUSR2 memory line. */
function heapSpaces(): string {
  const mib = (n: number): string => (n / 1048576).toFixed(1);
  return v8
    .getHeapSpaceStatistics()
    .filter((s) => s.space_size > 0)
    .map((s) => `${s.space_name.replace(/_space$/, '')} ${mib(s.space_used_size)}/${mib(s.space_size)}`)
    .join(', ');
}

/**
 * A full garbage collection, for the SIGUSR2 memory line: V8 exposes gc() only to
 * contexts made after --expose-gc is set, so a fresh one fetches it.
 */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}
