// The soak (test/soak/soak.ts) for CI: SNAPFS_SOAK_SECONDS (default 60) of backups of a
// changing tree, forget+prune+check, and a reader verifying every file it reads through the
// mount against what was committed. docs/reliability.md has the long run.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { tmpDir } from './helpers/cli.js';
import { fuseAvailable } from './helpers/mount.js';
import { runSoak } from './soak/soak.js';
import { formatSoakResult } from './soak/soak-report.js';
import { INITIAL_MESSAGES } from './soak/mail-tree.js';

const skip = !(await fuseAvailable()) && 'needs /dev/fuse';
const seconds = Number(process.env.SNAPFS_SOAK_SECONDS ?? 60);
/** A whole cycle (mutation, manifest, backup) takes about 5 s on a busy 2-core machine. */
const WORST_CYCLE_S = 15;

/** Mount points the kernel lists for this process (octal escapes undone). */
async function mountPoints(): Promise<string[]> {
  const lines = (await fsp.readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter(Boolean);
  return lines.map((l) => l.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

t.test(`soak: ${seconds} s of everything at once`, { skip, timeout: (seconds + 600) * 1000 }, async (t) => {
  const work = await tmpDir(t, 'snapfs-soak');
  const r = await runSoak({ seconds, work, log: (line) => t.comment(line) });
  t.comment(`\n${formatSoakResult(r)}`);

  t.same(r.errors, [], 'no errors: every byte read was committed, no command failed');
  const cycles = Math.floor(seconds / WORST_CYCLE_S);
  const maintenances = Math.floor(cycles / r.settings.maintenanceEvery);
  t.ok(r.backups >= cycles, `${r.backups} backups (at least ${cycles})`);
  t.ok(r.prunes >= maintenances, `${r.prunes} forget+prune rounds (at least ${maintenances})`);
  t.ok(r.checks >= maintenances, `${r.checks} checks (at least ${maintenances})`);
  t.ok(r.reads.walks >= cycles, `${r.reads.walks} snapshot walks by the reader (at least ${cycles})`);
  const files = (cycles * INITIAL_MESSAGES) / 2;
  t.ok(r.reads.files >= files, `${r.reads.files} files verified (at least ${files})`);
  t.ok(r.rss.summary?.bounded, `mount RSS bounded: max ${r.rss.summary?.max} <= ${r.rss.summary?.limit}`);
  t.notOk((await mountPoints()).includes(r.mnt), 'the mount is gone from /proc/self/mountinfo');
});
