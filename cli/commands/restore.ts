import type { Argv } from 'yargs';
import { withRepository } from '../context.js';
import { Output, formatBytes } from '../output.js';
import { SnapshotCatalog, parseSnapshotSpec } from '../../lib/snapshot/catalog.js';
import { restore } from '../../lib/ops/restore.js';

export function register(y: Argv): Argv {
  return y.command(
    'restore <repo> <spec> <target>',
    'restore a snapshot or a path of it (SOURCE@SNAP[:PATH]) into a new or empty directory',
    (a) =>
      a
        .positional('repo', { type: 'string', demandOption: true })
        .positional('spec', { type: 'string', demandOption: true })
        .positional('target', { type: 'string', demandOption: true })
        .option('json', { type: 'boolean', default: false }),
    async (argv) => {
      const out = new Output({ json: argv.json });
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
