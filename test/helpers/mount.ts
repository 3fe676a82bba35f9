// Mount helpers for the FUSE tests. The mount is always served by a child process
// (`snapfs mount --foreground`); this process only talks to it through the kernel and
// asynchronous child processes, so it can never deadlock with the server.

import { promises as fsp, constants as C } from 'node:fs';
import path from 'node:path';
import { spawnSnapfs, runProcess, runSnapfs, tmpDir, type SnapfsChild } from './cli.js';
import { findMount } from '../../lib/fuse/mount.js';
import { toFuseName } from '../../lib/fuse/names.js';
import { utimensNoFollow } from '../../lib/platform/native.js';
import { joinRaw } from './raw-path.js';

export const fuseAvailable = async (): Promise<boolean> => {
  try {
    await fsp.access('/dev/fuse', C.R_OK | C.W_OK);
    return true;
  } catch {
    return false;
  }
};

export interface Mounted {
  mnt: string;
  child: SnapfsChild;
  /** What the server reported when ready (mountpoint, pid, options...). */
  info: { mountpoint: string; pid: number; pidFile: string; options: string[] };
  /** Stops the server (SIGTERM) and makes sure nothing stays mounted; idempotent. */
  stop(): Promise<void>;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes (then returns the last value). */
export async function waitFor<T>(fn: () => Promise<T>, timeoutMs: number, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > end) return v;
    await sleep(everyMs);
  }
}

export async function isMounted(mnt: string): Promise<boolean> {
  return (await findMount(mnt)) !== undefined;
}

/** Last-resort cleanup: whatever is mounted at mnt goes (lazily). */
export async function forceUnmount(mnt: string): Promise<void> {
  for (let i = 0; i < 5 && (await isMounted(mnt)); i++) {
    await runProcess('umount', ['-l', mnt], { allowFail: true, timeoutMs: 30_000 });
  }
}

function waitExit(child: SnapfsChild, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Starts `snapfs mount REPO MNT --foreground --json` and resolves once the mount is
 * ready. Registers a teardown that unmounts, also when the test fails.
 */
export async function mountForeground(t: any, repo: string, mnt: string, extra: string[] = [], env?: Record<string, string>): Promise<Mounted> {
  const child = spawnSnapfs(['mount', repo, mnt, '--foreground', '--json', ...extra], { env });
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        if (!(await waitExit(child, 20_000))) {
          child.kill('SIGKILL');
          await waitExit(child, 5_000);
        }
      }
      await forceUnmount(mnt);
      if (process.env.SNAPFS_TEST_DEBUG) console.error(`mount server output:\n${child.output().stderr}`);
    })());
  t.teardown(stop);
  const info = await new Promise<Mounted['info']>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`mount did not become ready in 60 s:\n${child.output().stderr}`)), 60_000);
    const onData = (b: Buffer): void => {
      buf += b.toString('utf8');
      for (const line of buf.split('\n').slice(0, -1)) {
        try {
          const v = JSON.parse(line);
          if (v.mounted) {
            clearTimeout(timer);
            child.stdout!.off('data', onData);
            resolve(v.mounted);
            return;
          }
        } catch {
          // not our line
        }
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`snapfs mount exited (${sig ?? code}) before the mount was ready:\n${child.output().stderr}${child.output().stdout}`));
    });
  });
  return { mnt, child, info, stop };
}

/**
 * A tree made by `fill`, backed up as source `name` into a new repository (`damage` then
 * runs on it), mounted by a foreground server with `env`; `last` is MNT/name/last.
 */
export async function mountBackedUp(
  t: any,
  name: string,
  fill: (src: string) => Promise<void>,
  env?: Record<string, string>,
  damage?: (repo: string) => Promise<void>,
): Promise<{ src: string; repo: string; last: string; m: Mounted }> {
  const work = await tmpDir(t, `mount-${name}`);
  const src = path.join(work, 'src');
  const repo = path.join(work, 'repo');
  const mnt = path.join(work, 'mnt');
  await fsp.mkdir(src);
  await fill(src);
  await initRepo(repo);
  await backup(repo, src, name);
  await damage?.(repo);
  await fsp.mkdir(mnt);
  const m = await mountForeground(t, repo, mnt, [], env);
  return { src, repo, last: path.join(mnt, name, 'last'), m };
}

/** Waits for the server to exit; returns its exit code (or -1 on a signal). */
export async function exitCodeOf(child: SnapfsChild, timeoutMs = 20_000): Promise<number | null> {
  if (!(await waitExit(child, timeoutMs))) return null;
  return child.exitCode ?? -1;
}

/** init + backup shorthand: small chunks and packs keep the tests fast. */
export async function initRepo(repo: string): Promise<void> {
  await runSnapfs(['init', repo, '--chunk-avg', '65536', '--pack-size', '4194304']);
}

export async function backup(repo: string, src: string, source: string, time?: string): Promise<any> {
  const r = await runSnapfs(['backup', repo, src, '--source', source, '--json', ...(time ? ['--time', time] : [])]);
  return r.json.snapshot;
}

/**
 * Makes `dir` (a copy of a source tree) look the way the mount shows it: names and
 * symlink targets that are not valid UTF-8 take the documented spelling (each invalid
 * byte b becomes U+F700+b). Parent directory and symlink times are put back as they were.
 */
export async function applyMountNameSpelling(dir: string): Promise<number> {
  let changed = 0;
  async function visit(abs: Buffer): Promise<void> {
    const names = await fsp.readdir(abs, { encoding: 'buffer' });
    const dirSt = await fsp.lstat(abs, { bigint: true });
    let touched = false;
    for (const name of names) {
      let child = joinRaw(abs, name);
      const shown = Buffer.from(toFuseName(name), 'utf8');
      if (!shown.equals(name)) {
        const renamed = joinRaw(abs, shown);
        await fsp.rename(child, renamed);
        child = renamed;
        touched = true;
        changed++;
      }
      const st = await fsp.lstat(child, { bigint: true });
      if (st.isSymbolicLink()) {
        const target = await fsp.readlink(child, { encoding: 'buffer' });
        const shownTarget = Buffer.from(toFuseName(target), 'utf8');
        if (!shownTarget.equals(target)) {
          await fsp.unlink(child);
          await fsp.symlink(shownTarget, child);
          await fsp.lchown(child, Number(st.uid), Number(st.gid));
          utimensNoFollow(child, Number(st.atimeNs / 1_000_000_000n), Number(st.atimeNs % 1_000_000_000n), Number(st.mtimeNs / 1_000_000_000n), Number(st.mtimeNs % 1_000_000_000n));
          touched = true;
          changed++;
        }
      } else if (st.isDirectory()) {
        await visit(child);
      }
    }
    if (touched) {
      utimensNoFollow(abs, Number(dirSt.atimeNs / 1_000_000_000n), Number(dirSt.atimeNs % 1_000_000_000n), Number(dirSt.mtimeNs / 1_000_000_000n), Number(dirSt.mtimeNs % 1_000_000_000n));
    }
  }
  await visit(Buffer.from(path.resolve(dir)));
  return changed;
}

/**
 * Every entry's mtime, compared at the millisecond (what fuse-native can pass): returns
 * the differences. `expected` is the source side.
 */
export async function compareMtimesMs(expected: string, actual: string): Promise<string[]> {
  const diffs: string[] = [];
  async function visit(rel: Buffer): Promise<void> {
    const e = rel.length ? joinRaw(expected, rel) : Buffer.from(expected);
    const a = rel.length ? joinRaw(actual, rel) : Buffer.from(actual);
    const [es, as] = await Promise.all([fsp.lstat(e, { bigint: true }), fsp.lstat(a, { bigint: true })]);
    const ems = es.mtimeNs < 0n ? 0n : es.mtimeNs / 1_000_000n;
    const ams = as.mtimeNs / 1_000_000n;
    if (ems !== ams) diffs.push(`${rel.toString('utf8') || '.'}: mtime ${ems} ms expected, ${ams} ms shown`);
    if (es.isDirectory()) {
      for (const name of await fsp.readdir(e, { encoding: 'buffer' })) await visit(rel.length ? joinRaw(rel, name) : name);
    }
  }
  await visit(Buffer.alloc(0));
  return diffs;
}

/**
 * Waits until the server's read-ahead across files (which runs after the read that started
 * it was answered) has handed over what it will: its count of files stops moving.
 */
export async function readAheadSettled(m: Mounted): Promise<void> {
  let last = -1;
  for (let i = 0; i < 50; i++) {
    const r = (await serverMemory(m)).requests;
    const n = (r['files read ahead'] ?? 0) + (r['files assembled'] ?? 0) + (r['files failed to assemble'] ?? 0);
    if (n === last) return;
    last = n;
    await sleep(200);
  }
}

/** The server's SIGUSR2 memory line: JS heap in use, external memory, held nodes, the references the kernel took from listings (READDIRPLUS, or lookups the binding answered). */
export async function serverMemory(m: Mounted): Promise<{ heapUsed: number; external: number; held: number; fromListings: number; requests: Record<string, number> }> {
  const re = /heap ([\d.]+) MiB of [\d.]+ MiB, external ([\d.]+) MiB.*?(\d+) nodes held by the kernel \([^)]*\), (\d+) references taken from listings; kernel requests: ([^\n]*)/g;
  const seen = (): number => [...m.child.output().stderr.matchAll(re)].length;
  const count = seen();
  process.kill(m.info.pid, 'SIGUSR2');
  for (let i = 0; i < 100 && seen() === count; i++) await new Promise((r) => setTimeout(r, 50));
  const all = [...m.child.output().stderr.matchAll(re)];
  const last = all.length > count ? all[all.length - 1]! : undefined;
  if (!last) throw new Error(`no memory line from the server:\n${m.child.output().stderr.slice(-2000)}`);
  const requests = Object.fromEntries(last[5]!.split(', ').filter(Boolean).map((pair) => [pair.slice(0, pair.lastIndexOf(' ')), Number(pair.slice(pair.lastIndexOf(' ') + 1))]));
  return { heapUsed: Number(last[1]) * 1048576, external: Number(last[2]) * 1048576, held: Number(last[3]), fromListings: Number(last[4]), requests };
}
