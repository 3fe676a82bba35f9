// One directory of N entries (a mail folder that was never cleaned up): backup, an unchanged
// backup, ls, check, restore, and lookup/readdir through the mount, each timed with its peak
// RSS (from /usr/bin/time -v). Not in CI (test/mount-big.test.ts covers 100,000 entries there):
//   node dist/test/soak/bigdir.js [ENTRIES=1000000] [WORKDIR]
// prints the figures recorded in docs/reliability.md.
import { promises as fsp, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { cliPath, childEnv, runProcess, spawnSnapfs } from '../helpers/cli.js';

export interface Step {
  step: string;
  seconds: number;
  peakRssMiB: number;
  code: number;
  note?: string;
}

/** Runs a command under /usr/bin/time -v: exit code, wall time, peak RSS. */
export async function measured(step: string, command: string, args: string[], note?: string): Promise<Step & { stdout: string; stderr: string }> {
  const started = Date.now();
  const r = await runProcess('/usr/bin/time', ['-v', command, ...args], { allowFail: true, timeoutMs: 3 * 60 * 60 * 1000, env: childEnv() as Record<string, string> });
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr);
  return { step, seconds: (Date.now() - started) / 1000, peakRssMiB: rss ? Math.round(Number(rss[1]) / 1024) : -1, code: r.code, note, stdout: r.stdout, stderr: r.stderr };
}

export function snapfsMeasured(step: string, args: string[], note?: string) {
  return measured(step, process.execPath, [cliPath(), ...args], note);
}

/** Creates `entries` small files (64-100 bytes, all different) in `dir`. */
export async function makeBigDir(dir: string, entries: number): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  for (let i = 0; i < entries; i++) {
    const name = `${1700000000 + i}.M${i % 997}P${i % 65521}.mailhost,S=${64 + (i % 37)}:2,S`;
    const fd = openSync(join(dir, name), 'w', 0o600);
    writeSync(fd, `Message-ID: <${i}@example.org>\nSubject: message ${i}\n${'x'.repeat(i % 37)}\n`);
    closeSync(fd);
  }
}

export async function bigDirRun(work: string, entries: number, log: (s: string) => void = () => undefined): Promise<Step[]> {
  const src = join(work, 'src');
  const dir = join(src, 'INBOX', 'cur');
  const repo = join(work, 'repo');
  const steps: Step[] = [];
  const keep = (s: Step & { stdout?: string; stderr?: string }): Step => {
    const { stdout: _o, stderr: _e, ...rest } = s as Step & { stdout: string; stderr: string };
    steps.push(rest);
    log(`${rest.step}: ${rest.seconds.toFixed(1)} s, peak RSS ${rest.peakRssMiB} MiB, exit ${rest.code}${rest.note ? ` (${rest.note})` : ''}`);
    return rest;
  };
  let t0 = Date.now();
  await makeBigDir(dir, entries);
  log(`created ${entries} files in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await runProcess(process.execPath, [cliPath(), 'init', repo, '--chunk-avg', '65536'], { env: childEnv() as Record<string, string> });
  keep(await snapfsMeasured('backup', ['backup', repo, src, '--source', 'mail', '--time', '2026-03-01T02:00:00Z']));
  keep(await snapfsMeasured('backup, unchanged', ['backup', repo, src, '--source', 'mail', '--time', '2026-03-02T02:00:00Z']));
  // One new message: a big directory is paged, so this rewrites one page and the index.
  await fsp.writeFile(join(dir, 'new-message:2,'), 'one more\n');
  const inc = await snapfsMeasured('backup, one new file', ['backup', repo, src, '--source', 'mail', '--time', '2026-03-03T02:00:00Z', '--json']);
  const added = (() => {
    try {
      return JSON.parse(inc.stdout).snapshot.stats;
    } catch {
      return undefined;
    }
  })();
  inc.note = added ? `${added.blobsAdded} blobs added, ${added.bytesAddedStored} bytes stored` : undefined;
  keep(inc);
  const ls = await snapfsMeasured('ls of the directory', ['ls', repo, 'mail@last:INBOX/cur']);
  ls.note = `${ls.stdout.split('\n').length - 1} lines`;
  keep(ls);
  keep(await snapfsMeasured('check', ['check', repo]));
  const out = join(work, 'out');
  keep(await snapfsMeasured('restore', ['restore', repo, 'mail@last', out]));
  t0 = Date.now();
  const restored = (await fsp.readdir(join(out, 'INBOX', 'cur'))).length;
  steps.push({ step: 'restored entries counted', seconds: (Date.now() - t0) / 1000, peakRssMiB: 0, code: restored === entries + 1 ? 0 : 1, note: `${restored} entries` });
  await fsp.rm(out, { recursive: true, force: true });

  // Through the mount, when there is one to be had.
  const mnt = join(work, 'mnt');
  await fsp.mkdir(mnt, { recursive: true });
  const server = spawnSnapfs(['mount', repo, mnt, '--foreground', '--json']);
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
    if (ready) {
      const d = join(mnt, 'mail', 'last', 'INBOX', 'cur');
      const name = `${1700000000 + Math.floor(entries / 2)}.M${Math.floor(entries / 2) % 997}P${Math.floor(entries / 2) % 65521}.mailhost,S=${64 + (Math.floor(entries / 2) % 37)}:2,S`;
      keep(await measured('mount: stat one name (cold)', 'stat', ['-c', '%s', join(d, name)]));
      const listing = await measured('mount: ls -f | wc -l (readdir)', '/bin/sh', ['-c', `ls -f "${d}" | wc -l`]);
      listing.note = `${listing.stdout.trim()} names`;
      keep(listing);
      const rss = await fsp.readFile(`/proc/${server.pid}/status`, 'utf8').then((s) => /VmHWM:\s+(\d+)/.exec(s)?.[1]).catch(() => undefined);
      steps.push({ step: 'mount server peak RSS so far', seconds: 0, peakRssMiB: rss ? Math.round(Number(rss) / 1024) : -1, code: 0 });
      log(`mount server peak RSS: ${rss ? Math.round(Number(rss) / 1024) : '?'} MiB`);
    } else log(`mount not available: ${server.output().stderr.slice(0, 300)}`);
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 2000));
    await runProcess('umount', ['-l', mnt], { allowFail: true });
  }
  return steps;
}

// As a script.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const entries = Number(process.argv[2] ?? 1_000_000);
  const work = process.argv[3] ?? (await fsp.mkdtemp(join(tmpdir(), 'snapfs-bigdir-')));
  console.log(`${entries} entries in one directory, work dir ${work}`);
  const steps = await bigDirRun(work, entries, (s) => console.log(s));
  console.log(JSON.stringify(steps, null, 1));
  if (!process.argv[3]) await runProcess('rm', ['-rf', work]);
}
