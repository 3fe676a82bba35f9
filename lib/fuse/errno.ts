// The one place where errors become errno values for the kernel (negative, as fuse-native
// expects). Everything below lib/fuse throws typed SnapfsErrors; nothing else inspects them.

import os from 'node:os';
import { SnapfsError } from '../errors.js';

const E = os.constants.errno;

export const ENOENT = -E.ENOENT;
export const ENOTDIR = -E.ENOTDIR;
export const EISDIR = -E.EISDIR;
export const EIO = -E.EIO;
export const EROFS = -E.EROFS;
export const EINVAL = -E.EINVAL;
export const ESTALE = -E.ESTALE;
export const ENODATA = -E.ENODATA;
export const EOPNOTSUPP = -E.EOPNOTSUPP;
export const ERANGE = -E.ERANGE;
export const ENOTCONN = -E.ENOTCONN;

/** Maps any error to a negative errno; unknown errors are I/O errors. */
export function errnoOf(err: unknown): number {
  if (err instanceof SnapfsError) {
    switch (err.code) {
      case 'PATH_NOT_FOUND':
      case 'SNAPSHOT_NOT_FOUND':
        return ENOENT;
      case 'NOT_A_DIRECTORY':
        return ENOTDIR;
      case 'IS_A_DIRECTORY':
        return EISDIR;
      case 'READ_ONLY':
        return EROFS;
      case 'STALE_HANDLE':
        return ESTALE;
      case 'INVALID_ARGUMENT':
        return EINVAL;
      case 'CORRUPT_DATA':
      case 'BLOB_NOT_FOUND':
      case 'NODE_ID_COLLISION':
      default:
        return EIO;
    }
  }
  // A system error that escaped unwrapped (a pack file unreadable or gone...) is an I/O
  // error for the reader: the repository is damaged, the path itself exists.
  return EIO;
}

/** Whether an error deserves a line in the mount's log (not the ordinary "no such file"). */
export function isWorthLogging(errno: number): boolean {
  return errno !== ENOENT && errno !== ENOTDIR && errno !== EROFS && errno !== ENODATA && errno !== EOPNOTSUPP && errno !== EINVAL;
}
