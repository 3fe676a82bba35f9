import type { Argv } from 'yargs';
import { withRepository } from '../context.js';
import { Output, formatBytes, formatDuration } from '../output.js';
import { ProgressLine } from '../progress.js';
import { DEFAULT_MAX_UNUSED, DEFAULT_REPACK_THRESHOLD, PruneResult, prune } from '../../lib/ops/prune.js';

export function register(y: Argv): Argv {
  return y.command(
    'prune <repo>',
    'free the space of blobs no snapshot reaches: delete dead packs, repack sparse ones',
    (a) =>
      a
        .positional('repo', { type: 'string', demandOption: true })
        .option('repack-threshold', { type: 'number', default: DEFAULT_REPACK_THRESHOLD, describe: 'repack packs whose live fraction is below this (0..1)' })
        .option('max-unused', { type: 'number', default: DEFAULT_MAX_UNUSED, describe: 'then repack the sparsest packs until dead bytes are at most this fraction of live bytes (0..1)' })
        .option('dry-run', { type: 'boolean', default: false, describe: 'show what would be done, change nothing' })
        .option('json', { type: 'boolean', default: false }),
    async (argv) => {
      const out = new Output({ json: argv.json });
      const bar = new ProgressLine();
      const result = await withRepository(argv.repo, (repo) =>
        prune(repo, {
          dryRun: argv['dry-run'],
          repackThreshold: argv['repack-threshold'],
          maxUnused: argv['max-unused'],
          onProgress: (p) => out.progress(bar.line(p.phase, p.done, p.total, p.unit)),
        }),
      );
      out.clearProgress();
      for (const w of result.warnings) out.warn(w);
      out.info(pruneSummary(result));
      out.json(result);
    },
  );
}

export function pruneSummary(r: PruneResult): string {
  const would = r.dryRun ? 'would be ' : '';
  return [
    `${r.dryRun ? 'dry run: ' : ''}${r.snapshots} snapshots reach ${r.blobs.live} of ${r.blobs.total} blobs`,
    `packs:  ${r.packs.deleted} ${would}deleted, ${r.packs.repacked} ${would}repacked into ${r.dryRun ? 'new ones' : r.packs.written}, ${r.packs.unreferenced} unreferenced ${would}removed, ${r.packs.kept} kept`,
    `blobs:  ${r.blobs.removed} ${would}removed, ${r.blobs.moved} ${would}moved (${formatBytes(r.bytes.copied)} copied)`,
    `size:   ${formatBytes(r.bytes.before)} -> ${r.dryRun ? 'about ' : ''}${formatBytes(r.bytes.after)} (${formatBytes(r.bytes.freed)} ${would}freed) in ${formatDuration(r.durationMs)}`,
  ].join('\n');
}
