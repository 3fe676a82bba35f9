// The `backup` command line read without yargs (cli/quick-argv.ts) must mean what yargs
// makes of it, and leave to yargs whatever it does not read the same way.
import t from 'tap';
import yargs from 'yargs';
import { quickBackupArgs } from '../cli/quick-argv.js';
import { BackupArgs, backupOptions } from '../cli/commands/backup.js';

const KEYS = ['repo', 'dir', 'source', 'exclude', 'time', 'one-file-system', 'json'] as const;

/** What the real `backup` definition gives the handler, or the usage error. */
async function viaYargs(args: string[]): Promise<Partial<BackupArgs> | Error> {
  let got: Record<string, unknown> | undefined;
  try {
    await yargs(args)
      .strict()
      .command('backup <repo> <dir>', '', backupOptions, (argv) => {
        got = argv as unknown as Record<string, unknown>;
      })
      .fail((msg, err) => {
        throw err ?? new Error(msg);
      })
      .parseAsync();
  } catch (err) {
    return err as Error;
  }
  const out: Record<string, unknown> = {};
  for (const k of KEYS) if (got![k] !== undefined) out[k] = got![k];
  return out as Partial<BackupArgs>;
}

const taken: string[][] = [
  ['backup', 'R', 'D', '--source', 'mail'],
  ['backup', '--source', 'mail', 'R', 'D'],
  ['backup', 'R', '--source', 'mail/imap', 'D'],
  ['backup', 'R', 'D', '--source', 'c', '--json'],
  ['backup', '--json', 'R', 'D', '--source', 'c', '--one-file-system'],
  ['backup', 'R', 'D', '--source', 'c', '--exclude', '*.tmp'],
  ['backup', 'R', 'D', '--exclude', '*.tmp', '--exclude', 'cache/**', '--source', 'c'],
  ['backup', 'R', 'D', '--source', 'c', '--time', '2026-11-28T02:00:00Z'],
  ['backup', '/var/tmp/repo dir', '/home/a b', '--source', '123'],
  ['backup', '0x10', '1e3', '--source', 'true', '--time', '2020'],
  ['backup', 'R', 'D', '--source', 'a=b', '--exclude', 'x=y'],
];

const declined: string[][] = [
  ['backup'],
  ['backup', 'R'],
  ['backup', 'R', 'D'],
  ['backup', 'R', 'D', 'E', '--source', 'c'],
  ['backup', 'R', 'D', '--source'],
  ['backup', 'R', 'D', '--source', '-x'],
  ['backup', 'R', 'D', '--source', ''],
  ['backup', 'R', 'D', '--source=c'],
  ['backup', 'R', 'D', '--source', 'c', '--source', 'd'],
  ['backup', 'R', 'D', '--source', 'c', '--json', '--json'],
  ['backup', 'R', 'D', '--source', 'c', '--no-json'],
  ['backup', 'R', 'D', '--source', 'c', '--oneFileSystem'],
  ['backup', 'R', 'D', '--source', 'c', '--help'],
  ['backup', 'R', 'D', '--source', 'c', '-h'],
  ['backup', 'R', 'D', '--source', 'c', '--version'],
  ['backup', 'R', 'D', '--source', 'c', '--bogus'],
  ['backup', 'R', '--exclude', 'a', 'D', '--source', 'c'], // yargs: D is a second glob
  ['backup', 'R', 'D', '--source', 'c', '--', 'x'],
  ['backup', '-', 'D', '--source', 'c'],
  ['backup', 'R', 'D', '--source', 'c', '--time'],
  ['backup', 'R', 'D', '--source', 'c', '--exclude'],
  ['backu', 'R', 'D', '--source', 'c'],
  ['restore', 'R', 'D', 'T'],
  [],
];

t.test('taken: the same arguments yargs gives', async (t) => {
  for (const args of taken) {
    const quick = quickBackupArgs(args);
    t.ok(quick, `taken: ${args.join(' ')}`);
    t.strictSame(quick, await viaYargs(args), args.join(" "));
  }
});

t.test('declined: left to yargs', async (t) => {
  for (const args of declined) t.equal(quickBackupArgs(args), undefined, args.join(' ') || '(none)');
});
