import type { Argv } from 'yargs';
import { Output, formatBytes, formatDuration } from '../output.js';
import { ProgressLine } from '../progress.js';
import { EXIT_PARTIAL } from '../exit-codes.js';

export function register(y: Argv): Argv {
  return y.command('repair', 'rebuild damaged repository structures', (a) =>
    a
      .command(
        'index <repo>',
        'rebuild the index from the pack files alone (after index/ was lost or damaged); unmount first',
        (b) =>
          b
            .positional('repo', { type: 'string', demandOption: true })
            .option('read-data', { type: 'boolean', default: false, describe: 'also verify every blob, and leave damaged ones out of the index so the next backup stores them again' })
            .option('json', { type: 'boolean', default: false }),
        async (argv) => {
          const out = new Output({ json: argv.json });
          const bar = new ProgressLine();
          const { repairIndex } = await import('../../lib/ops/repair-index.js');
          const result = await repairIndex(argv.repo, {
            readData: argv['read-data'],
            onProgress: (p) => out.progress(bar.line('reading packs', p.done, p.total, p.unit)),
          });
          out.clearProgress();
          for (const d of result.damaged) {
            out.warn(
              `pack ${d.pack}: ${d.error}; scanned its blobs: recovered ${d.recoveredBlobs} (${formatBytes(d.recoveredBytes)})` +
                `${d.salvagedInto.length ? ` into new pack(s) ${d.salvagedInto.join(', ')}` : ''}, ${formatBytes(d.unreadableBytes)} unreadable; damaged file kept as ${d.keptAs}`,
            );
          }
          for (const c of result.corrupt) out.warn(`pack ${c.pack}: blob ${c.blob} fails verification, left out of the index: ${c.error}`);
          out.info(
            `index rebuilt from ${result.packs} packs: ${result.blobs} blobs` +
              `${result.duplicates ? `, ${result.duplicates} duplicate copies ignored` : ''}` +
              `${result.damaged.length ? `, ${result.damaged.length} damaged pack(s)` : ''}` +
              `${result.corrupt.length ? `, ${result.corrupt.length} damaged blob(s) left out` : ''} in ${formatDuration(result.durationMs)}`,
          );
          const lost = result.damaged.length > 0 || result.corrupt.length > 0;
          if (lost) out.info(`run 'snapfs check ${argv.repo}' to see which snapshots and files lost data`);
          out.json(result);
          if (lost) process.exitCode = EXIT_PARTIAL;
        },
      )
      .demandCommand(1, "name what to repair: 'snapfs repair index REPO'"),
  );
}
