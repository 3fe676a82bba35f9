// Paths longer than PATH_MAX. Linux refuses a path argument of 4096 bytes or more
// (ENAMETOOLONG), yet a tree may be any depth: a mail folder hierarchy, a 1,000-level test
// tree, names of 255 bytes. Walking it by absolute path stops there. Instead, a directory
// whose path grows past LONG_PATH_BYTES is opened (O_DIRECTORY|O_NOFOLLOW) and the names
// under it are given as /proc/self/fd/N/name, which the kernel resolves through the open
// descriptor: every path handed to a system call stays short, whatever the depth, and no
// native code has to change. The descriptor must stay open while such paths are in use.

import { promises as fs, constants } from 'node:fs';

/** A directory path longer than this is replaced by a descriptor-based one. */
export const LONG_PATH_BYTES = 3072;
const PROC_FD = '/proc/self/fd/';

export interface DirectoryBase {
  /** The path to use for the directory from now on (short). */
  path: Buffer;
  /** The open descriptor behind `path`, or undefined when the path was short enough. */
  fd?: number;
  close(): Promise<void>;
}

/**
 * `dir` itself when it is short; otherwise the directory opened without following a
 * symlink (ELOOP or ENOTDIR if it is not a directory any more) and named by its descriptor.
 */
export async function directoryBase(dir: Buffer): Promise<DirectoryBase> {
  if (dir.length <= LONG_PATH_BYTES) return { path: dir, close: async () => undefined };
  const fh = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  return { path: Buffer.from(`${PROC_FD}${fh.fd}`), fd: fh.fd, close: () => fh.close() };
}

/** The descriptor a /proc/self/fd/N/... path depends on, if any. */
export function baseDescriptor(p: Buffer): number | undefined {
  if (p.length <= PROC_FD.length || !p.subarray(0, PROC_FD.length).equals(Buffer.from(PROC_FD))) return undefined;
  const m = /^(\d+)/.exec(p.subarray(PROC_FD.length, PROC_FD.length + 12).toString('latin1'));
  return m ? Number(m[1]) : undefined;
}
