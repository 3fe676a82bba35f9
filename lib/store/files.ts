// Durable file primitives: the write-ordering invariants (pack before index before
// snapshot) only hold if every step is fsynced, and renames are made durable by
// fsyncing the directory that holds them.

import { promises as fs, constants } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fromSystemError } from '../errors.js';

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes all of `data` at `position`: write(2) may write less than asked (a disk filling
 * up), and a file written short must never pass for a whole one. Nothing written is ENOSPC.
 */
export async function writeFully(fh: fs.FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    if (bytesWritten === 0) throw Object.assign(new Error('no space left on device (nothing written)'), { code: 'ENOSPC' });
    done += bytesWritten;
  }
}

/** Writes `data` to `file` so that a crash leaves either the old or the new content. */
export async function writeFileAtomic(file: string, data: Uint8Array, mode = 0o600): Promise<void> {
  const tmp = path.join(path.dirname(file), `.tmp-${randomBytes(8).toString('hex')}`);
  try {
    const fh = await fs.open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
    await fsyncDir(path.dirname(file));
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw fromSystemError(err, `writing ${file}`);
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}
