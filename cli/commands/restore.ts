import type { Argv } from 'yargs';
import { withRepository } from '../context.js';
import { Output, formatBytes } from '../output.js';
import { EXIT_PARTIAL } from '../exit-codes.js';
import { SnapfsError } from '../../lib/errors.js';

export function register(y: Argv): Argv {
  return y.command(
    'restore <repo> <spec> <target>',
    'restore a snapshot or a path of it (SOURCE@SNAP[:PATH]) into a new or empty directory; with --all-sources, @DATE restores every source into TARGET/<source>/',
    (a) =>
      a
        .positional('repo', { type: 'string', demandOption: true })
        .positional('spec', { type: 'string', demandOption: true })
        .positional('target', { type: 'string', demandOption: true })
        .option('all-sources', {
          type: 'boolean',
          default: false,
          describe: "disaster recovery: spec is @YYYY-MM-DD (each source's snapshot of that day, or the newest before it) or @last",
        })
        .option('json', { type: 'boolean', default: false }),
    async (argv) => {
      const out = new Output({ json: argv.json });
      if (argv['all-sources']) {
        const { restoreAllSources } = await import('../../lib/ops/restore-all.js');
        if (!argv.spec.startsWith('@')) throw new SnapfsError('INVALID_ARGUMENT', `with --all-sources the spec is @DATE or @last, got ${JSON.stringify(argv.spec)}`);
        const result = await withRepository(argv.repo, (repo) =>
          restoreAllSources(repo, argv.spec.slice(1), argv.target, {
            onSource: (source, snap) => out.info(`restoring ${source}@${snap.name} (${snap.time}) ...`),
            onProgress: (source, s, current) => out.progress(`${source}: ${s.files} files, ${formatBytes(s.bytes)}  ${current}`),
          }), true);
        out.clearProgress();
        let bad = 0;
        for (const s of result.sources) {
          for (const w of s.stats?.warnings ?? []) out.warn(w);
          if (s.status === 'restored') {
            const st = s.stats!;
            out.info(`restored ${s.source}@${s.snapshot!.name}: ${st.files} files, ${st.directories} directories, ${st.others} other entries, ${formatBytes(st.bytes)} into ${s.target}`);
          } else if (s.status === 'skipped') out.info(`skipped  ${s.source}: ${s.message}`);
          else {
            bad++;
            out.warn(`${s.source}: FAILED: ${s.message}`);
          }
        }
        out.json(result);
        if (bad > 0) process.exitCode = EXIT_PARTIAL;
        return;
      }
      const { SnapshotCatalog, parseSnapshotSpec } = await import('../../lib/snapshot/catalog.js');
      const { restore } = await import('../../lib/ops/restore.js');
      const spec = parseSnapshotSpec(argv.spec);
      const stats = await withRepository(argv.repo, async (repo) => {
        const snap = await new SnapshotCatalog(repo.snapshots).resolve(spec.source, spec.snapshot);
        return restore(repo, snap, argv.target, {
          subPath: spec.path,
          onProgress: (s, current) => out.progress(`${s.files} files, ${formatBytes(s.bytes)}  ${current}`),
        });
      }, true);
      out.clearProgress();
      for (const w of stats.warnings) out.warn(w);
      out.info(`restored ${stats.files} files, ${stats.directories} directories, ${stats.others} other entries, ${formatBytes(stats.bytes)} into ${argv.target}`);
      out.json({ target: argv.target, ...stats });
    },
  );
}
