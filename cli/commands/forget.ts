import type { Argv } from 'yargs';
import { withRepository } from '../context.js';
import { Output } from '../output.js';

export function register(y: Argv): Argv {
  return y.command(
    'forget <repo>',
    'drop snapshots by retention policy (periods in local time); run prune afterwards to free space',
    (a) =>
      a
        .positional('repo', { type: 'string', demandOption: true })
        .option('source', { type: 'string', describe: 'only this source (default: every source, each on its own)' })
        .option('keep-last', { type: 'number', describe: 'keep the N newest snapshots' })
        .option('keep-daily', { type: 'number', describe: 'keep the newest snapshot of each of the N most recent days that have one' })
        .option('keep-weekly', { type: 'number', describe: 'same per ISO week' })
        .option('keep-monthly', { type: 'number', describe: 'same per calendar month' })
        .option('dry-run', { type: 'boolean', default: false, describe: 'show what would be removed, remove nothing' })
        .option('json', { type: 'boolean', default: false }),
    async (argv) => {
      const out = new Output({ json: argv.json });
      const { forget } = await import('../../lib/ops/forget.js');
      const result = await withRepository(argv.repo, (repo) =>
        forget(repo, {
          source: argv.source,
          dryRun: argv['dry-run'],
          policy: { keepLast: argv['keep-last'], keepDaily: argv['keep-daily'], keepWeekly: argv['keep-weekly'], keepMonthly: argv['keep-monthly'] },
        }),
      );
      let source = '';
      for (const d of result.decisions) {
        const s = d.snapshot;
        if (s.source !== source) {
          source = s.source;
          out.info(`source ${source}:`);
        }
        const verb = d.keep ? 'keep  ' : result.dryRun ? 'would remove' : 'remove';
        out.info(`  ${verb} ${s.source}@${s.name}  ${s.time}${d.keep ? `  (${d.reasons.join(', ')})` : ''}`);
      }
      out.info(`${result.kept} kept, ${result.removed} ${result.dryRun ? 'would be removed (dry run)' : 'removed'}${result.removed > 0 && !result.dryRun ? "; run 'snapfs prune' to free their space" : ''}`);
      out.json({
        dryRun: result.dryRun,
        kept: result.kept,
        removed: result.removed,
        snapshots: result.decisions.map((d) => ({
          id: d.snapshot.id,
          source: d.snapshot.source,
          name: d.snapshot.name,
          time: d.snapshot.time,
          action: d.keep ? 'keep' : 'remove',
          reasons: d.reasons,
        })),
      });
    },
  );
}
