// The nightly command line read without yargs. A no-change backup is meant to cost little
// more than a stat walk, and loading yargs and parsing with it took ~0.1 s of CPU, a third
// of the whole run. So a plain `backup REPO DIR --source S` (with --exclude V, --time V,
// --one-file-system, --json) is recognised here; anything else (help, an unknown,
// repeated, negated or `--name=value` option, a value that starts with '-', `--`) goes to
// yargs as before, which also gives every usage error its usual wording.
// test/cli-quick-argv.test.ts holds the two parsers to the same results.

import type { BackupArgs } from './commands/backup.js';

const VALUE_OPTIONS = new Set(['--source', '--exclude', '--time']);
const FLAGS = new Set(['--one-file-system', '--json']);

/** The `backup` arguments `args` (argv after the script) give, or undefined: ask yargs. */
export function quickBackupArgs(args: readonly string[]): BackupArgs | undefined {
  if (args[0] !== 'backup') return undefined;
  const positionals: string[] = [];
  const seen = new Set<string>();
  const exclude: string[] = [];
  let source: string | undefined;
  let time: string | undefined;
  let afterExclude = false;
  for (let i = 1; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('-')) {
      // yargs reads `--exclude a b` as two globs (array options take what follows).
      if (afterExclude || a === '') return undefined;
      positionals.push(a);
      continue;
    }
    afterExclude = false;
    if (VALUE_OPTIONS.has(a)) {
      const v = args[++i];
      if (v === undefined || v === '' || v.startsWith('-')) return undefined;
      if (a === '--exclude') {
        exclude.push(v);
        afterExclude = true;
        continue;
      }
      if (seen.has(a)) return undefined;
      seen.add(a);
      if (a === '--source') source = v;
      else time = v;
    } else if (FLAGS.has(a)) {
      if (seen.has(a)) return undefined;
      seen.add(a);
    } else return undefined;
  }
  if (positionals.length !== 2 || source === undefined) return undefined;
  return {
    repo: positionals[0]!,
    dir: positionals[1]!,
    source,
    exclude,
    ...(time !== undefined ? { time } : {}),
    'one-file-system': seen.has('--one-file-system'),
    json: seen.has('--json'),
  };
}
