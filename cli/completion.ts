// Exit code 0 means "the command did its job". A process can also end before its command
// finished: a promise that nothing will settle once the event loop runs dry, or an exit(0)
// somewhere below us. For a backup that is a missing snapshot that reads as success, which
// happened once (an index commit that failed on lmdb-js's write thread settled nothing:
// docs/reliability.md); for a restore or a check it would be a partial restore or a check
// that reads as clean. So main.ts arms this guard for every command once its arguments are
// parsed (backup and run again, with their own name and status), and an exit with code 0
// before it says "done" becomes a failure with a message naming its last reported status.
import { EXIT_FAILURE } from './exit-codes.js';

let armed: { command: string; lastStatus: string } | undefined;

function onExit(code: number): void {
  if (!armed || code !== 0) return;
  const status = armed.lastStatus ? ` (last status: ${armed.lastStatus})` : '';
  process.stderr.write(`snapfs: internal error: the process ended before ${armed.command} finished${status}; treat this run as failed\n`);
  process.exitCode = EXIT_FAILURE;
}

/** From here on, ending with code 0 needs completed() first. */
export function armCompletionGuard(command: string): void {
  if (!armed) process.on('exit', onExit);
  armed = { command, lastStatus: '' };
}

/** What the command is doing, for the guard's message. */
export function noteStatus(status: string): void {
  if (armed) armed.lastStatus = status;
}

/** The command has done its job and reported it. */
export function completed(): void {
  armed = undefined;
  process.off('exit', onExit);
}
