// One writer per repository: an exclusive flock on REPO/lock. The kernel drops the lock
// when the holder dies (even by SIGKILL), so there is no stale-lock cleanup to get
// wrong. The file's content only names the holder for the error message.

import { promises as fs } from 'node:fs';
import os from 'node:os';
import { flock } from '../platform/native.js';
import { SnapfsError, fromSystemError } from '../errors.js';

export class WriterLock {
  private constructor(private readonly fh: fs.FileHandle) {}

  static async acquire(lockFile: string, operation: string): Promise<WriterLock> {
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(lockFile, 'a+', 0o600);
    } catch (err) {
      throw fromSystemError(err, `opening lock file ${lockFile}`);
    }
    let acquired: boolean;
    try {
      acquired = flock(fh.fd, true, true);
    } catch (err) {
      await fh.close();
      throw fromSystemError(err, `locking ${lockFile}`);
    }
    if (!acquired) {
      const holder = await fh.readFile('utf8').catch(() => '');
      await fh.close();
      let who = 'another process';
      try {
        const h = JSON.parse(holder) as { pid: number; operation: string; host: string; since: string };
        who = `pid ${h.pid} on ${h.host} (snapfs ${h.operation}, since ${h.since})`;
      } catch {
        /* holder is still writing its note */
      }
      throw new SnapfsError('REPOSITORY_LOCKED', `repository is locked by ${who}; only one writer may run at a time`);
    }
    const note = JSON.stringify({ pid: process.pid, operation, host: os.hostname(), since: new Date().toISOString() });
    await fh.truncate(0);
    await fh.write(note, 0);
    return new WriterLock(fh);
  }

  async release(): Promise<void> {
    await this.fh.close();
  }
}
