#!/usr/bin/env node
import './bootstrap.js';
import type { Argv } from 'yargs';
import { reportError } from './output.js';
import { EXIT_BY_CODE, EXIT_FAILURE, EXIT_USAGE } from './exit-codes.js';
import { fromSystemError, isSnapfsError } from '../lib/errors.js';
import { quickBackupArgs } from './quick-argv.js';
import { armCompletionGuard, completed } from './completion.js';

async function main(): Promise<void> {
  const args = process.argv.slice(2); // what yargs' hideBin gives under node
  const json = args.includes('--json');
  // A failure in a background promise (an index commit on a full disk, say) still
  // ends the command with its proper message and exit code, never a hang. Not by calling
  // process.exit() at once: lmdb-js's write thread may be waiting for this thread to run a
  // transaction callback, and exit() joins the thread pool, so the process hung for good
  // (one disk-full backup in three). The command's own error path normally ends it with the
  // same error a moment later; the timer only covers a command that would never end.
  let background: number | undefined;
  process.on('unhandledRejection', async (err) => {
    const cause = (err as { commitError?: Promise<unknown> } | null)?.commitError; // lmdb-js keeps the errno here
    const { explainIndexFailure } = await import('../lib/store/blob-index.js'); // loaded already if it failed
    const inner = explainIndexFailure(cause ? await cause.then(() => err, (e: unknown) => e) : err);
    if (background !== undefined) return;
    const systemish = (inner as { code?: unknown } | null)?.code !== undefined;
    background = reportError(systemish ? fromSystemError(inner, 'background task') : inner, json);
    process.exitCode = background;
    setTimeout(() => process.exit(background), 10_000).unref();
  });
  try {
    const quick = quickBackupArgs(args);
    if (quick) await (await import('./commands/backup.js')).runBackup(quick);
    else await (await commandLine(args)).parseAsync();
    completed();
  } catch (err) {
    // Said once: the same failure already reported from the background is not repeated.
    const code = background !== undefined && isSnapfsError(err) && (EXIT_BY_CODE[err.code] ?? EXIT_FAILURE) === background ? background : reportError(err, json);
    process.exit(code);
  }
}

/** Every command, parsed by yargs (loaded only here: see quick-argv.ts). */
async function commandLine(args: string[]): Promise<Argv> {
  const { default: yargs } = await import('yargs');
  const commands = await Promise.all([
    import('./commands/init.js'),
    import('./commands/backup.js'),
    import('./commands/browse.js'),
    import('./commands/restore.js'),
    import('./commands/stats.js'),
    import('./commands/forget.js'),
    import('./commands/prune.js'),
    import('./commands/check.js'),
    import('./commands/repair.js'),
    import('./commands/run.js'),
    import('./commands/mount.js'),
  ]);
  let y = yargs(args)
    .scriptName('snapfs')
    .usage('$0 <command> [options]\n\nDeduplicated, incremental backups browsed as plain files.')
    .strict()
    .demandCommand(1, 'name a command (see --help)')
    .recommendCommands()
    .help()
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    // Every command's exit 0 claims its work is done (a restore complete, a check clean):
    // ending before the handler returns, the process must not say so (cli/completion.ts).
    // Armed here, once parsing is through: --help and --version end with exit 0 earlier.
    .middleware((argv) => armCompletionGuard(`'snapfs ${argv._.join(' ')}'`))
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`snapfs: ${msg}\n(see 'snapfs --help')\n`);
      process.exit(EXIT_USAGE);
    });
  for (const c of commands) y = c.register(y);
  skipHelpCache(y);
  return y;
}

/**
 * yargs renders the running command's whole help text as its handler starts, in case the
 * handler asks for it later (showHelp): cliui and string-width over every line, ~60 ms of
 * a no-change backup. No handler here does (--help and usage errors render it afresh).
 * Internal API: where it is missing, yargs just keeps doing it.
 */
function skipHelpCache(y: Argv): void {
  const usage = (y as unknown as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: unknown } } })
    .getInternalMethods?.().getUsageInstance?.();
  if (usage && typeof usage.cacheHelpMessage === 'function') usage.cacheHelpMessage = (): void => undefined;
}

await main();
