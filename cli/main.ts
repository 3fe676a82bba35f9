#!/usr/bin/env node
import './bootstrap.js';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { reportError } from './output.js';
import { EXIT_USAGE } from './exit-codes.js';
import * as init from './commands/init.js';
import * as backupCmd from './commands/backup.js';
import * as browse from './commands/browse.js';
import * as restoreCmd from './commands/restore.js';
import * as stats from './commands/stats.js';
import * as mountCmd from './commands/mount.js';
import * as forgetCmd from './commands/forget.js';
import * as pruneCmd from './commands/prune.js';
import * as checkCmd from './commands/check.js';
import * as repairCmd from './commands/repair.js';
import * as runCmd from './commands/run.js';

const commands = [init, backupCmd, browse, restoreCmd, stats, forgetCmd, pruneCmd, checkCmd, repairCmd, runCmd, mountCmd];

async function main(): Promise<void> {
  const args = hideBin(process.argv);
  const json = args.includes('--json');
  let y = yargs(args)
    .scriptName('snapfs')
    .usage('$0 <command> [options]\n\nDeduplicated, incremental backups browsed as plain files.')
    .strict()
    .demandCommand(1, 'name a command (see --help)')
    .recommendCommands()
    .help()
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`snapfs: ${msg}\n(see 'snapfs --help')\n`);
      process.exit(EXIT_USAGE);
    });
  for (const c of commands) y = c.register(y);
  try {
    await y.parseAsync();
  } catch (err) {
    process.exitCode = reportError(err, json);
  }
}

await main();
