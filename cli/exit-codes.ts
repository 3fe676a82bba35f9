// The one place where error codes become process exit codes. Scripts rely on these.
import { ErrorCode } from '../lib/errors.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** The command finished but skipped something (unreadable files in a backup, ...). */
export const EXIT_PARTIAL = 3;

export const EXIT_BY_CODE: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: EXIT_USAGE,
  NOT_A_REPOSITORY: 10,
  REPOSITORY_EXISTS: 10,
  FORMAT_TOO_NEW: 11,
  REPOSITORY_LOCKED: 12,
  SOURCE_UNREADABLE: 13,
  SNAPSHOT_NOT_FOUND: 14,
  PATH_NOT_FOUND: 14,
  NOT_A_DIRECTORY: 14,
  IS_A_DIRECTORY: 14,
  BLOB_NOT_FOUND: 15,
  CORRUPT_DATA: 15,
  NO_SPACE: 16,
  UNSAFE_PATH: 17,
  IO_ERROR: 18,
  READ_ONLY: 18,
  STALE_HANDLE: 18,
  NODE_ID_COLLISION: 18,
  INTERRUPTED: 130,
};
