// Typed errors. Every failure a user can meet carries a stable code; the edges map codes
// once: cli/ to exit codes, lib/fuse to errno. Nothing else inspects messages.

export type ErrorCode =
  | 'INVALID_ARGUMENT'     // bad option or argument
  | 'NOT_A_REPOSITORY'     // path has no (valid) config.json
  | 'REPOSITORY_EXISTS'    // init on a non-empty directory
  | 'FORMAT_TOO_NEW'       // repository written by a newer snapfs
  | 'REPOSITORY_LOCKED'    // another writer holds the lock
  | 'SOURCE_UNREADABLE'    // backup source directory missing or unreadable
  | 'SNAPSHOT_NOT_FOUND'   // no snapshot by that name or id
  | 'PATH_NOT_FOUND'       // no such path inside a snapshot
  | 'NOT_A_DIRECTORY'      // path component is not a directory
  | 'IS_A_DIRECTORY'       // file operation on a directory
  | 'BLOB_NOT_FOUND'       // index has no entry for an id (damaged repository)
  | 'CORRUPT_DATA'         // bytes on disk do not match what they claim
  | 'NO_SPACE'             // ENOSPC or EDQUOT while writing
  | 'UNSAFE_PATH'          // restore refused to write outside its target
  | 'IO_ERROR'             // other operating-system errors
  | 'READ_ONLY'            // a write to the read-only mount
  | 'STALE_HANDLE'         // a mount node or file handle that is no longer known
  | 'NODE_ID_COLLISION'    // two mount entries hash to one node id; the later one is refused
  | 'INTERRUPTED';         // stopped by a signal

export class SnapfsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Stored bytes fail a check: wrong magic, bad checksum, id mismatch, truncation. */
export class CorruptDataError extends SnapfsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CORRUPT_DATA', message, options);
  }
}

export class InvalidArgumentError extends SnapfsError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

export function isSnapfsError(err: unknown, code?: ErrorCode): err is SnapfsError {
  return err instanceof SnapfsError && (code === undefined || err.code === code);
}

/** Node's fs errors carry a string code such as 'ENOENT'. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Wraps an operating-system error into a SnapfsError, keeping ENOSPC distinct so callers
 * and users see "disk full" rather than a generic I/O failure.
 */
export function fromSystemError(err: unknown, what: string): SnapfsError {
  if (err instanceof SnapfsError) return err;
  const code = errnoCode(err);
  const detail = err instanceof Error ? err.message : String(err);
  // LMDB reports errno as a number (28) and only in its message.
  const numeric = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || numeric === 28 || numeric === 122 || /no space left on device/i.test(detail)) {
    return new SnapfsError('NO_SPACE', `${what}: no space left on device (${detail})`, { cause: err });
  }
  return new SnapfsError('IO_ERROR', `${what}: ${detail}`, { cause: err });
}
