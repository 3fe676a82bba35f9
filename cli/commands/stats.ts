import type { Argv } from 'yargs';
import { promises as fs } from 'node:fs';
import { withRepository } from '../context.js';
import { Output, formatBytes } from '../output.js';

export function register(y: Argv): Argv {
  return y.command(
    'stats <repo>',
    'show repository size and contents',
    (a) => a.positional('repo', { type: 'string', demandOption: true }).option('json', { type: 'boolean', default: false }),
    async (argv) => {
      const out = new Output({ json: argv.json });
      const { SnapshotCatalog } = await import('../../lib/snapshot/catalog.js');
      const result = await withRepository(argv.repo, async (repo) => {
        const snaps = await new SnapshotCatalog(repo.snapshots).all();
        let packBytes = 0;
        let packs = 0;
        for (const p of repo.index.allPacks()) {
          packBytes += p.size;
          packs++;
        }
        let rawBytes = 0;
        let blobs = 0;
        for (const b of repo.index.allBlobs()) {
          rawBytes += b.rawLength;
          blobs++;
        }
        const indexBytes = (await fs.stat(`${repo.layout.index}/data.mdb`)).size;
        return {
          snapshots: snaps.length,
          sources: [...new Set(snaps.map((s) => s.source))].sort(),
          packs,
          packBytes,
          blobs,
          rawBytes,
          indexBytes,
          logicalBytes: snaps.reduce((n, s) => n + s.stats.bytesTotal, 0),
        };
      }, true);
      out.info(
        [
          `snapshots: ${result.snapshots} of ${result.sources.length} source(s): ${result.sources.join(', ')}`,
          `packs:     ${result.packs} (${formatBytes(result.packBytes)})`,
          `blobs:     ${result.blobs} (${formatBytes(result.rawBytes)} uncompressed)`,
          `index:     ${formatBytes(result.indexBytes)}`,
          `snapshots hold ${formatBytes(result.logicalBytes)} of file data in all`,
        ].join('\n'),
      );
      out.json(result);
    },
  );
}
