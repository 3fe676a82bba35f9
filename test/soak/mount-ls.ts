// `ls -l` of one directory through the mount of an existing repository, with the serving
// process's peak RSS: the figure bigdir.ts cannot give without a backup first.
//   node dist/test/soak/mount-ls.js REPO DIR-IN-MOUNT [MOUNTPOINT] [-- extra mount args]
// e.g. node dist/test/soak/mount-ls.js /var/tmp/snapfs-bigdir/repo mail/last/INBOX/cur
// The mount is served by a child process and always unmounted at the end. LS_FLAGS
// replaces -l (e.g. LS_FLAGS=-f for a plain listing).
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { cliPath, runProcess, spawnNode } from '../helpers/cli.js';
import { measured } from './bigdir.js';

export interface LsResult {
  seconds: number;
  lines: number;
  /** Peak RSS of the serving process (VmHWM), MiB. */
  serverPeakMiB: number;
  /** RSS of the serving process when `ls -l` ended, MiB. */
  serverEndMiB: number;
  /** Peak RSS of the serving process right before `ls -l`, MiB. */
  serverBeforeMiB: number;
}

async function statusKiB(pid: number, key: string): Promise<number> {
  const s = await fsp.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? -1);
}

export async function mountLs(repo: string, dirInMount: string, mnt: string, extra: string[] = [], log: (s: string) => void = () => undefined, flags = '-l'): Promise<LsResult> {
  await fsp.mkdir(mnt, { recursive: true });
  // SNAPFS_SERVER_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=DIR"): node options for the
  // serving process only (NODE_OPTIONS refuses --cpu-prof).
  const nodeArgs = (process.env.SNAPFS_SERVER_NODE_ARGS ?? '').split(' ').filter((a) => a);
  const cmd = [...nodeArgs, cliPath(), 'mount', repo, mnt, '--foreground', '--json', ...extra];
  const server = spawnNode(cmd[0]!, cmd.slice(1));
  try {
    const ready = await new Promise<boolean>((resolve) => {
      let buf = '';
      const timer = setTimeout(() => resolve(false), 120_000);
      server.stdout!.on('data', (b: Buffer) => {
        buf += b.toString();
        if (buf.includes('"mounted"')) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      server.once('exit', () => resolve(false));
    });
    if (!ready) throw new Error(`mount not available: ${server.output().stderr.slice(0, 300)}`);
    const pid = server.pid!;
    const before = await statusKiB(pid, 'VmHWM');
    const d = join(mnt, dirInMount);
    const r = await measured(`mount: ls ${flags} | wc -l`, '/bin/sh', ['-c', `ls ${flags} "${d}" | wc -l`]);
    if (r.code !== 0) throw new Error(`ls ${flags} failed: ${r.stderr.slice(0, 300)}`);
    const res = {
      seconds: r.seconds,
      lines: Number(r.stdout.trim()),
      serverPeakMiB: Math.round((await statusKiB(pid, 'VmHWM')) / 1024),
      serverEndMiB: Math.round((await statusKiB(pid, 'VmRSS')) / 1024),
      serverBeforeMiB: Math.round(before / 1024),
    };
    log(`ls ${flags}: ${res.seconds.toFixed(1)} s, ${res.lines} lines, server peak RSS ${res.serverPeakMiB} MiB (before ${res.serverBeforeMiB}, at the end ${res.serverEndMiB})`);
    return res;
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 2000));
    await runProcess('umount', ['-l', mnt], { allowFail: true });
  }
}

// As a script.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const dashes = process.argv.indexOf('--');
  const args = dashes < 0 ? process.argv.slice(2) : process.argv.slice(2, dashes);
  const extra = dashes < 0 ? [] : process.argv.slice(dashes + 1);
  const [repo, dir, mntArg] = args;
  if (!repo || !dir) {
    console.error('usage: mount-ls.js REPO DIR-IN-MOUNT [MOUNTPOINT] [-- mount args]');
    process.exit(2);
  }
  const mnt = mntArg ?? (await fsp.mkdtemp(join(tmpdir(), 'snapfs-mount-ls-')));
  const r = await mountLs(repo, dir, mnt, extra, (s) => console.log(s), process.env.LS_FLAGS ?? '-l');
  console.log(JSON.stringify(r));
}
