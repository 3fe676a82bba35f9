import type { Argv } from 'yargs';
import { withRepository, displayName } from '../context.js';
import { Output, formatBytes, formatDuration } from '../output.js';
import { ProgressLine } from '../progress.js';
import { EXIT_BY_CODE } from '../exit-codes.js';
import type { CheckProblem } from '../../lib/ops/check.js';

export function register(y: Argv): Argv {
  return y.command(
    'check <repo>',
    'verify the repository: snapshots, trees, index against pack trailers; --read-data also every blob',
    (a) =>
      a
        .positional('repo', { type: 'string', demandOption: true })
        .option('read-data', { type: 'boolean', default: false, describe: 'read, decompress and verify every blob' })
        .option('json', { type: 'boolean', default: false }),
    async (argv) => {
      const out = new Output({ json: argv.json });
      const { check } = await import('../../lib/ops/check.js');
      let bar = new ProgressLine();
      let phase = '';
      const result = await withRepository(argv.repo, (repo) =>
        check(repo, {
          readData: argv['read-data'],
          onProgress: (p) => {
            if (p.phase !== phase) {
              phase = p.phase;
              bar = new ProgressLine();
            }
            out.progress(bar.line(p.phase, p.done, p.total, p.unit));
          },
        }), true);
      out.clearProgress();
      for (const p of result.problems) out.info(problemLine(p));
      for (const n of result.notes) out.info(`note: ${n}`);
      const what = `${result.snapshots} snapshots, ${result.trees} trees, ${result.files} files, ${result.packs} packs, ${result.blobs} blobs${result.readData ? `, ${formatBytes(result.bytesRead)} read` : ''}`;
      if (result.problems.length === 0) out.info(`no problems found (${what}) in ${formatDuration(result.durationMs)}`);
      else out.info(`${result.problems.length} problem(s) found; damaged snapshots: ${result.damagedSnapshots.join(', ') || 'none'} (${what})`);
      out.json({
        ok: result.problems.length === 0,
        readData: result.readData,
        snapshots: result.snapshots,
        trees: result.trees,
        files: result.files,
        packs: result.packs,
        blobs: result.blobs,
        bytesRead: result.bytesRead,
        damagedSnapshots: result.damagedSnapshots,
        problems: result.problems.map((p) => ({
          kind: p.kind,
          ...(p.snapshot ? { snapshot: p.snapshot, snapshotId: p.snapshotId } : {}),
          ...(p.path ? pathJson(p.path) : {}),
          ...(p.pack ? { pack: p.pack } : {}),
          ...(p.blob ? { blob: p.blob } : {}),
          message: p.message,
        })),
        notes: result.notes,
        durationMs: result.durationMs,
      });
      if (result.problems.length > 0) process.exitCode = EXIT_BY_CODE.CORRUPT_DATA;
    },
  );
}

function problemLine(p: CheckProblem): string {
  if (p.snapshot) return `${p.snapshot}: ${p.path ? displayPath(p.path) : '/'}: ${p.message}`;
  return p.message;
}

/** Paths inside a snapshot: '/' is the root, others are relative ("users/bob/inbox/123"). */
function displayPath(p: Buffer): string {
  return p.length === 1 && p[0] === 0x2f ? '/' : displayName(p.subarray(p[0] === 0x2f ? 1 : 0));
}

function pathJson(p: Buffer): { path: string } | { pathBase64: string } {
  const s = p.toString('utf8');
  return Buffer.from(s, 'utf8').equals(p) ? { path: s } : { pathBase64: p.toString('base64') };
}
