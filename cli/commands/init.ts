import type { Argv } from 'yargs';
import { Output } from '../output.js';
import { InvalidArgumentError } from '../../lib/errors.js';

export function register(y: Argv): Argv {
  return y.command(
    'init <repo>',
    'create a new repository',
    (a) =>
      a
        .positional('repo', { type: 'string', demandOption: true, describe: 'repository directory (new or empty)' })
        .option('chunk-avg', { type: 'number', describe: 'average chunk size in bytes (power of two; min = avg/4, max = avg*4)' })
        .option('pack-size', { type: 'number', describe: 'target pack size in bytes' })
        .option('compression-level', { type: 'number', describe: 'zstd level (default 1; 3 compresses 4% smaller at half the speed)' })
        .option('json', { type: 'boolean', default: false }),
    async (argv) => {
      const out = new Output({ json: argv.json });
      let chunker;
      if (argv['chunk-avg'] !== undefined) {
        const avg = argv['chunk-avg'];
        if (!Number.isInteger(avg) || avg < 256 || (avg & (avg - 1)) !== 0) throw new InvalidArgumentError(`--chunk-avg must be a power of two >= 256, got ${avg}`);
        chunker = { minSize: avg / 4, avgSize: avg, maxSize: avg * 4 };
      }
      const { Repository } = await import('../../lib/store/repository.js');
      const config = await Repository.init(argv.repo, { chunker, packTargetBytes: argv['pack-size'], compressionLevel: argv['compression-level'] });
      out.info(`created snapfs repository ${config.id} at ${argv.repo}`);
      out.json({ repository: argv.repo, id: config.id, version: config.version, chunker: { minSize: config.chunker.minSize, avgSize: config.chunker.avgSize, maxSize: config.chunker.maxSize } });
    },
  );
}
