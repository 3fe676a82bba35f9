// The soak (issue 5): for a given time, everything at once against one repository.
//   node dist/test/soak/soak.js [SECONDS=600] [WORKDIR]
// Processes: this orchestrator (the writer loop and maintenance, through the CLI), the
// mount server (`snapfs mount --foreground`), the mutator (mutator.ts) and the reader
// (reader.ts). Every few seconds the mutator is paused, the quiet tree's manifest is
// recorded under the snapshot's name and a backup is taken; every few backups
// forget --keep-last, prune and check run while the reader keeps verifying snapshots
// through the mount. Prints a table and exits 1 on any error; docs/reliability.md.
// test/soak.test.ts runs it for SNAPFS_SOAK_SECONDS (60) in CI.

import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { cpus, tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { runProcess, runSnapfs } from '../helpers/cli.js';
import { projectRoot } from '../../lib/platform/native.js';
import { initRepo, isMounted, mountForeground, type Mounted } from '../helpers/mount.js';
import { localDate } from '../../lib/format/snapshot.js';
import { SERVER_MALLOC_ENV, SERVER_NODE_FLAGS } from '../../cli/commands/mount.js';
import { Worker } from './channel.js';
import { manifestOf, saveManifest } from './manifest.js';
import { RssSampler, summarizeRss, type RssSample, type RssSummary } from './rss.js';
import { classifyWalk, type WalkTally, newWalkTally } from './walk-tally.js';
import { formatSoakResult } from './soak-report.js';
import type { MutatorIn, MutatorOut } from './mutator.js';
import type { ReaderIn, ReaderOut, WalkReport } from './reader.js';
import type { MutationKind } from './mail-tree.js';

export interface SoakOptions {
  seconds: number;
  /** Created if missing; must be empty. Holds the tree, repository, mount point, manifests. */
  work: string;
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** The mutator's time between two backups. */
  backupEveryMs?: number;
  /** forget + prune + check after every this many backups. */
  maintenanceEvery?: number;
  /** check --read-data at every this many maintenances (the first one included). */
  readDataEvery?: number;
  keepLast?: number;
  seed?: number;
}

export type SoakComponent = 'writer' | 'maintenance' | 'reader' | 'mutator' | 'mount' | 'soak';

export interface SoakProblem {
  component: SoakComponent;
  message: string;
}

export interface SoakResult {
  settings: Required<Omit<SoakOptions, 'log' | 'signal'>>;
  elapsedMs: number;
  mutations: Partial<Record<MutationKind, number>>;
  backups: number;
  forgets: number;
  prunes: number;
  checks: number;
  checksReadData: number;
  /** Snapshots forget removed; those left at the end. */
  forgotten: number;
  snapshotsLeft: number;
  reads: WalkTally;
  rss: { samples: RssSample[]; summary?: RssSummary };
  mnt: string;
  errors: SoakProblem[];
}

const SOURCE = 'mail';
const DAY_MS = 86_400_000;
/** Noon UTC: one local date per day in any time zone from UTC-11 to UTC+11. */
const FIRST_DAY_MS = Date.parse('2030-01-01T12:00:00Z');
const WORKER_ANSWER_MS = 120_000;
const RSS_EVERY_MS = 2000;
/** Every so many backups the server is asked for its memory line (SIGUSR2), logged at the end. */
const MEMORY_LINE_EVERY = 20;
/** A reader that has not finished a walk for this long is stuck: the mount hangs. */
const READER_STALL_MS = 180_000;

/** tap's t.teardown for code that runs outside tap: undone in reverse order. */
class Teardowns {
  private readonly fns: Array<() => unknown> = [];
  teardown(fn: () => unknown): void {
    this.fns.push(fn);
  }
  async run(): Promise<void> {
    for (const fn of this.fns.reverse()) await fn();
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const settings = {
    seconds: options.seconds,
    work: resolve(options.work),
    backupEveryMs: options.backupEveryMs ?? 3000,
    maintenanceEvery: options.maintenanceEvery ?? 4,
    readDataEvery: options.readDataEvery ?? 3,
    keepLast: options.keepLast ?? 3,
    seed: options.seed ?? 5,
  };
  const log = options.log ?? (() => {});
  const dirs = await workDirs(settings.work);
  const started = Date.now();
  const result: SoakResult = {
    settings, elapsedMs: 0, mutations: {}, backups: 0, forgets: 0, prunes: 0, checks: 0, checksReadData: 0,
    forgotten: 0, snapshotsLeft: 0, reads: newWalkTally(), rss: { samples: [] }, mnt: dirs.mnt, errors: [],
  };
  const problem = (component: SoakComponent, message: string): void => {
    result.errors.push({ component, message });
    log(`ERROR ${component}: ${message.split('\n')[0]}`);
  };
  /** When the forget that removed each snapshot began: reads failing later are excused. */
  const forgottenAt = new Map<string, number>();
  const teardowns = new Teardowns();
  const mutator = new Worker<MutatorIn, MutatorOut>('mutator', new URL('./mutator.js', import.meta.url), [dirs.src, String(settings.seed)]);
  teardowns.teardown(() => mutator.kill());
  mutator.on('failed', (m) => problem('mutator', m.message));
  let reader: Worker<ReaderIn, ReaderOut> | undefined;
  let sampler: RssSampler | undefined;
  let mount: Mounted | undefined;
  let lastWalkAt = Date.now();

  /** Snapshot k's manifest first (the tree is quiet), then its backup. */
  const backup = async (k: number): Promise<void> => {
    const time = new Date(FIRST_DAY_MS + k * DAY_MS).toISOString();
    const name = localDate(time);
    await saveManifest(dirs.manifests, await manifestOf(dirs.src, name));
    const r = await runSnapfs(['backup', dirs.repo, dirs.src, '--source', SOURCE, '--time', time, '--json'], { allowFail: true });
    if (r.code !== 0) return problem('writer', `backup ${k} exited ${r.code}: ${r.stderr}`);
    if (r.json?.snapshot?.name !== name) return problem('writer', `backup ${k} is named ${r.json?.snapshot?.name}, expected ${name}`);
    result.backups++;
  };

  const maintain = async (round: number): Promise<void> => {
    const forgetStarted = Date.now();
    const f = await runSnapfs(['forget', dirs.repo, '--keep-last', String(settings.keepLast), '--json'], { allowFail: true });
    if (f.code !== 0) return problem('maintenance', `forget exited ${f.code}: ${f.stderr}`);
    result.forgets++;
    for (const s of f.json.snapshots) if (s.action === 'remove') forgottenAt.set(s.name, forgetStarted);
    const p = await runSnapfs(['prune', dirs.repo, '--json'], { allowFail: true });
    if (p.code !== 0) return problem('maintenance', `prune exited ${p.code}: ${p.stderr}`);
    result.prunes++;
    const readData = round % settings.readDataEvery === 0;
    const c = await runSnapfs(['check', dirs.repo, '--json', ...(readData ? ['--read-data'] : [])], { allowFail: true });
    if (c.code !== 0 || c.json?.ok !== true) return problem('maintenance', `check${readData ? ' --read-data' : ''} exited ${c.code}: ${c.stdout.slice(0, 4000)}`);
    result.checks++;
    if (readData) result.checksReadData++;
    log(`maintenance ${round}: forgot ${f.json.removed}, prune freed ${p.json.bytes.freed} bytes, check${readData ? ' --read-data' : ''} ok`);
  };

  try {
    await initRepo(dirs.repo);
    await mutator.next('ready', WORKER_ANSWER_MS);
    await backup(0);
    // With the settings `snapfs mount` gives its background server, whose memory this measures.
    mount = await mountForeground(teardowns, dirs.repo, dirs.mnt, [], { NODE_OPTIONS: SERVER_NODE_FLAGS.join(' '), ...SERVER_MALLOC_ENV });
    sampler = new RssSampler(mount.info.pid, RSS_EVERY_MS);
    reader = new Worker('reader', new URL('./reader.js', import.meta.url), [dirs.mnt, SOURCE, dirs.manifests, String(settings.seed)]);
    teardowns.teardown(() => reader!.kill());
    reader.on('failed', (m) => problem('reader', m.message));
    const walks: WalkReport[] = [];
    reader.on('walk', (m) => {
      lastWalkAt = Date.now();
      walks.push(m.report);
    });
    log(`mounted at ${dirs.mnt} (server pid ${mount.info.pid}); running for ${settings.seconds} s`);

    for (let k = 1; Date.now() - started < settings.seconds * 1000 && !options.signal?.aborted; k++) {
      mutator.send({ type: 'resume' });
      await sleep(settings.backupEveryMs, undefined, { signal: options.signal }).catch(() => undefined);
      mutator.send({ type: 'pause' });
      await mutator.next('paused', WORKER_ANSWER_MS);
      await backup(k);
      if (k % settings.maintenanceEvery === 0) {
        mutator.send({ type: 'resume' });
        await maintain(k / settings.maintenanceEvery - 1);
      }
      if (Date.now() - lastWalkAt > READER_STALL_MS) throw new Error(`the reader has not finished a walk for ${READER_STALL_MS / 1000} s: the mount hangs`);
      if (k % MEMORY_LINE_EVERY === 0) mount.child.kill('SIGUSR2');
      if (k % 10 === 0) log(`${Math.round((Date.now() - started) / 1000)} s: ${result.backups} backups, ${walks.length} walks, ${result.errors.length} errors`);
    }

    reader.send({ type: 'stop' });
    await reader.next('stopped', READER_STALL_MS);
    mutator.send({ type: 'stop' });
    result.mutations = (await mutator.next('stopped', WORKER_ANSWER_MS)).counts;
    if (mount.child.exitCode !== null || mount.child.signalCode !== null) problem('mount', `the server exited during the run:\n${mount.child.output().stderr}`);
    // Where the server's memory goes (heap, buffers, nodes the kernel holds), over the run.
    for (const line of mount.child.output().stderr.split('\n')) if (line.includes('memory: rss')) log(`server ${line.trim()}`);
    for (const w of walks) classifyWalk(result.reads, w, forgottenAt, (m) => problem('reader', m));
    const list = await runSnapfs(['snapshots', dirs.repo, '--json']);
    result.snapshotsLeft = list.json.snapshots.length;
  } catch (err) {
    problem('soak', (err as Error).stack ?? String(err));
  } finally {
    result.rss.samples = sampler?.stop() ?? [];
    await teardowns.run();
  }
  result.forgotten = forgottenAt.size;
  result.elapsedMs = Date.now() - started;
  result.rss.summary = summarizeRss(result.rss.samples);
  if (result.rss.summary && !result.rss.summary.bounded) {
    problem('mount', `RSS grew to ${result.rss.summary.max} bytes, above the limit of ${Math.round(result.rss.summary.limit)} (docs/reliability.md)`);
  }
  if (await isMounted(dirs.mnt)) problem('mount', `${dirs.mnt} is still mounted after the teardown`);
  return result;
}

async function workDirs(work: string): Promise<{ src: string; repo: string; mnt: string; manifests: string }> {
  await fsp.mkdir(work, { recursive: true });
  if ((await fsp.readdir(work)).length) throw new Error(`${work} is not empty; the soak needs a fresh directory`);
  const dirs = { src: join(work, 'src'), repo: join(work, 'repo'), mnt: join(work, 'mnt'), manifests: join(work, 'manifests') };
  await fsp.mkdir(dirs.mnt);
  await fsp.mkdir(dirs.manifests);
  return dirs;
}

// As a script: run, print the table, exit 1 on any error. The work directory is removed
// after a clean run and kept for inspection otherwise.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const seconds = Number(process.argv[2] ?? 600);
  const work = process.argv[3] ?? (await fsp.mkdtemp(join(tmpdir(), 'snapfs-soak-')));
  const abort = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => abort.abort());
  const commit = (await runProcess('git', ['rev-parse', '--short', 'HEAD'], { allowFail: true, cwd: projectRoot() })).stdout.trim();
  const load = async (): Promise<string> => (await fsp.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
  const header = `snapfs soak, ${new Date().toISOString()}, commit ${commit || 'unknown'}, ${cpus().length} CPUs, load average before ${await load()}`;
  const result = await runSoak({ seconds, work, signal: abort.signal, log: (l) => console.error(`[soak] ${l}`) });
  console.log(`${header}, after ${await load()}\n${formatSoakResult(result)}`);
  if (result.errors.length === 0) await fsp.rm(work, { recursive: true, force: true });
  else console.log(`work directory kept: ${work}`);
  process.exit(result.errors.length ? 1 : 0);
}
