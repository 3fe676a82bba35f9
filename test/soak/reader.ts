// The soak's reader process: walks snapshot directories of the mount, one after another,
// alternating `last` and a randomly chosen dated snapshot, reads every file and judges it
// against the manifests the orchestrator recorded. Started by soak.ts:
//   node dist/test/soak/reader.js MNT SOURCE MANIFEST_DIR SEED
// Each walk is reported as it ends; the orchestrator decides which failures are excused
// (only those of snapshots that forget removed).
//
// `last` moves while it is walked when a backup commits meanwhile. The link is read before
// and after the walk: unchanged, the walk is judged like a dated snapshot; moved, every
// entry seen must still match one of the snapshots `last` pointed to in between (files
// of the old snapshot may vanish mid-walk, so completeness is not judged then).

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { parentChannel } from './channel.js';
import { loadManifest, manifestNames, newReadBuffer, type Manifest } from './manifest.js';
import { judge, observe, type Observation, type Verdict } from './snapshot-walk.js';
import { XorShift32 } from '../helpers/tree-gen.js';

export interface WalkReport extends Verdict {
  /** 'last' or the snapshot name walked. */
  walked: string;
  /** The snapshot the walk was judged against; for a moved `last`, 'FROM..TO'. */
  snapshot: string;
  /** `last` moved during the walk. */
  raced: boolean;
  failures: Observation['failures'];
  ms: number;
  /** Epoch milliseconds: compared with when forget began. */
  endedAt: number;
}

export type ReaderIn = { type: 'stop' };
export type ReaderOut = { type: 'walk'; report: WalkReport } | { type: 'stopped' } | { type: 'failed'; message: string };

/** Failures kept per walk: a vanished snapshot fails every path, a few say enough. */
const FAILURES_KEPT = 5;

const [mnt, source, manifestDir, seed] = process.argv.slice(2);
const sourceDir = join(mnt!, source!);
const rng = new XorShift32(Number(seed));
const buffer = newReadBuffer();
const manifests = new Map<string, Manifest>();
let stopping = false;

const send = parentChannel<ReaderIn, ReaderOut>((m) => {
  if (m.type === 'stop') stopping = true;
});

async function manifest(name: string): Promise<Manifest | undefined> {
  if (!manifests.has(name)) {
    const m = await loadManifest(manifestDir!, name);
    if (m) manifests.set(name, m);
  }
  return manifests.get(name);
}

/** Walks one dated snapshot. Listed without a manifest is wrong: none of our backups made it. */
async function walkDated(name: string): Promise<WalkReport> {
  const started = Date.now();
  const m = await manifest(name);
  const obs = await observe(join(sourceDir, name), buffer);
  const verdict = m ? judge(obs, [m], true) : { wrong: [`${name}: listed, but no backup ever made it`], extra: [], missing: [], files: 0, bytes: 0 };
  return report(name, name, false, obs, verdict, started);
}

async function walkLast(): Promise<WalkReport> {
  const started = Date.now();
  const from = await fsp.readlink(join(sourceDir, 'last'));
  const obs = await observe(join(sourceDir, 'last'), buffer);
  const to = await fsp.readlink(join(sourceDir, 'last'));
  const names = (await manifestNames(manifestDir!)).filter((n) => n >= from && n <= to);
  const candidates = (await Promise.all(names.map(manifest))).filter((m): m is Manifest => m !== undefined);
  const raced = from !== to;
  const verdict = candidates.length
    ? judge(obs, candidates, !raced)
    : { wrong: [`last -> ${from}..${to}: no manifest`], extra: [], missing: [], files: 0, bytes: 0 };
  return report('last', raced ? `${from}..${to}` : from, raced, obs, verdict, started);
}

function report(walked: string, snapshot: string, raced: boolean, obs: Observation, v: Verdict, started: number): WalkReport {
  return { ...v, walked, snapshot, raced, failures: obs.failures.slice(0, FAILURES_KEPT), ms: Date.now() - started, endedAt: Date.now() };
}

try {
  for (let turn = 0; !stopping; turn++) {
    const listed = (await fsp.readdir(sourceDir)).filter((n) => n !== 'last');
    for (const name of manifests.keys()) if (!listed.includes(name)) manifests.delete(name);
    const r = turn % 2 === 0 || !listed.length ? await walkLast() : await walkDated(listed[rng.next() % listed.length]!);
    send({ type: 'walk', report: r });
  }
  send({ type: 'stopped' });
} catch (err) {
  send({ type: 'failed', message: (err as Error).stack ?? String(err) });
  process.exitCode = 1;
}
process.disconnect();
