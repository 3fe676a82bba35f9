// check's memory does not grow with the number of blobs (issue 5). It grouped every index
// entry by pack (~270 bytes of live heap per blob) and read a big directory's whole
// listing before walking it (~600 bytes per entry): 1,414 MiB peak RSS for one directory
// of 1,000,000 files, and 300 MiB (321 MiB with --read-data) for this test's repository,
// where it now takes 104 MiB (111 MiB) run alone, ~150 MiB under tap. Real files, index
// and packs; the bounds leave room for a busy machine.
import t from 'tap';
import v8 from 'node:v8';
import vm from 'node:vm';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { runSnapfs, spawnSnapfs, tmpDir } from './helpers/cli.js';
import { makeBigDir } from './soak/bigdir.js';
import { Repository } from '../lib/store/repository.js';
import { check } from '../lib/ops/check.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const MiB = 1024 * 1024;
const N = 100_000;
/** Live heap added per blob while checking (it was ~270 for the index alone). */
const BYTES_PER_BLOB_BOUND = 32;
/**
 * Plus what does not grow with the blobs: a decoded page of the big directory and the pages
 * in the tree cache at the moment of a sample. The same build measured 1.5 and 7.2 MiB in
 * two runs; the old check grew by ~86 MiB here.
 */
const FIXED_BYTES_BOUND = 8 * MiB;
const PEAK_RSS_BOUND = 224 * MiB;

/** Peak RSS (VmHWM) of a running process, polled until it exits. */
function watchPeak(pid: number, exited: Promise<unknown>): Promise<number> {
  return new Promise((resolve) => {
    let peak = 0;
    let done = false;
    void exited.then(() => {
      done = true;
    });
    const poll = async (): Promise<void> => {
      try {
        const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
        peak = Math.max(peak, Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024);
      } catch {
        done = true; // gone
      }
      if (done) resolve(peak);
      else setTimeout(() => void poll(), 20);
    };
    void poll();
  });
}

t.test(`check of ${N} blobs: memory does not grow with them`, async (t) => {
  const work = await tmpDir(t, 'check-memory');
  const src = path.join(work, 'src');
  const repoDir = path.join(work, 'repo');
  await makeBigDir(path.join(src, 'INBOX', 'cur'), N);
  await runSnapfs(['init', repoDir]);
  await runSnapfs(['backup', repoDir, src, '--source', 'mail', '--time', '2026-03-01T02:00:00Z']);
  // A second snapshot sharing all but a page of the big directory.
  await fsp.writeFile(path.join(src, 'INBOX', 'cur', 'new-message:2,'), 'one more\n');
  await runSnapfs(['backup', repoDir, src, '--source', 'mail', '--time', '2026-03-02T02:00:00Z']);

  t.test('live heap while checking, in this process', async (t) => {
    const repo = await Repository.open(repoDir, { readOnly: true });
    t.teardown(() => repo.close());
    const live = (): number => {
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const before = live();
    let peak = before;
    let phase = '';
    let calls = 0;
    const r = await check(repo, {
      onProgress: (p) => {
        if (p.phase !== phase || ++calls % 8 === 0) peak = Math.max(peak, live());
        phase = p.phase;
      },
    });
    t.same(r.problems, [], 'a healthy repository');
    t.ok(r.blobs > N && r.files === 2 * N + 1, `${r.blobs} blobs, ${r.files} files`);
    const grown = peak - before;
    const bound = FIXED_BYTES_BOUND + BYTES_PER_BLOB_BOUND * r.blobs;
    t.ok(grown < bound, `live heap grew by ${(grown / MiB).toFixed(1)} MiB at most (${(grown / r.blobs).toFixed(1)} bytes per blob), under ${(bound / MiB).toFixed(1)} MiB: 8 MiB + ${BYTES_PER_BLOB_BOUND} bytes per blob`);
  });

  for (const args of [[], ['--read-data']]) {
    t.test(`peak RSS of snapfs check ${args.join(' ')}`, async (t) => {
      const child = spawnSnapfs(['check', repoDir, ...args]);
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const peak = await watchPeak(child.pid!, exited);
      t.equal(await exited, 0, `check finds nothing ${child.output().stderr}`);
      t.match(child.output().stdout, /^no problems found /);
      t.ok(peak > 0 && peak < PEAK_RSS_BOUND, `peak RSS ${(peak / MiB).toFixed(0)} MiB < ${PEAK_RSS_BOUND / MiB} MiB`);
    });
  }
});
