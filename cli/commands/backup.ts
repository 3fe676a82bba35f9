import type { Argv } from 'yargs';
import { withRepository } from '../context.js';
import { Output, formatBytes, formatDuration } from '../output.js';
import { EXIT_PARTIAL } from '../exit-codes.js';
import { armCompletionGuard, noteStatus } from '../completion.js';

/** The parsed command line of `backup`, from yargs or from cli/quick-argv.ts. */
export interface BackupArgs {
  repo: string;
  dir: string;
  source: string;
  exclude: string[];
  time?: string;
  'one-file-system': boolean;
  json: boolean;
}

/** The arguments and options of `backup` (tests parse with it too). */
export function backupOptions(a: Argv): Argv<BackupArgs> {
  return a
    .positional('repo', { type: 'string', demandOption: true })
    .positional('dir', { type: 'string', demandOption: true, describe: 'source directory' })
    .option('source', { type: 'string', demandOption: true, describe: 'backup set name, e.g. mail/imap (slashes nest)' })
    .option('exclude', { type: 'string', array: true, default: [] as string[], describe: 'glob to leave out (repeatable)' })
    .option('time', { type: 'string', describe: 'snapshot time, ISO 8601 (default: now)' })
    .option('one-file-system', { type: 'boolean', default: false, describe: 'do not cross into other filesystems' })
    .option('json', { type: 'boolean', default: false });
}

export function register(y: Argv): Argv {
  return y.command('backup <repo> <dir>', 'store a new snapshot of a directory', backupOptions, runBackup);
}

export async function runBackup(argv: BackupArgs): Promise<void> {
  armCompletionGuard('the backup');
  const out = new Output({ json: argv.json });
  const { backup } = await import('../../lib/backup/backup.js');
  const result = await withRepository(argv.repo, (repo) =>
    backup(repo, {
      source: argv.source,
      path: argv.dir,
      excludes: argv.exclude,
      time: argv.time,
      oneFileSystem: argv['one-file-system'],
      onProgress: (s, current) => {
        const line = `${s.files} files, ${formatBytes(s.bytesRead)} read, ${formatBytes(s.bytesAddedStored)} added  ${current}`;
        noteStatus(line);
        out.progress(line);
      },
      onWarning: (w) => out.warn(`${w.path}: ${w.message}`),
    }),
  );
  out.clearProgress();
  const s = result.snapshot;
  const st = s.stats;
  out.info(
    [
      `snapshot ${s.source}@${s.name} (${s.id}) saved${s.partial ? ' PARTIALLY: some files could not be read' : ''}`,
      `files:   ${st.filesNew} new, ${st.filesChanged} changed, ${st.filesUnchanged} unchanged (${st.filesOpened} opened, ${st.filesFailed} failed)`,
      `dirs:    ${st.directories} (${st.directoriesUnchanged ?? 0} listed as before, with the top), other entries: ${st.otherEntries}`,
      ...(st.entriesChangedRecently ? [`recent:  ${st.entriesChangedRecently} entries changed too recently to trust their times: read again next time`] : []),
      `data:    ${formatBytes(st.bytesTotal)} in files, ${formatBytes(st.bytesRead)} read, ${formatBytes(st.bytesAddedRaw)} new (${formatBytes(st.bytesAddedStored)} stored)`,
      `time:    ${formatDuration(st.durationMs)}`,
    ].join('\n'),
  );
  out.json({ snapshot: s, warnings: result.warnings });
  if (s.partial) process.exitCode = EXIT_PARTIAL;
}
