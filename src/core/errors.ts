// Every failure Loom reports, as one class per failure with a stable code.
// Callers switch on `code`; the CLI maps `exitCode`; services answer with `httpStatus`.
// The README's error table is checked against ERROR_CODES by a test.

/** Process exit codes, documented in the README. */
export const EXIT = {
  ok: 0,
  internal: 1,
  usage: 2,
  network: 3,
  integrity: 4,
  disk: 5,
  cache: 6,
  listen: 7,
  locked: 8,
  interrupted: 130,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export interface LoomErrorDetails {
  /** What the user can do about it; appended to the message. */
  hint?: string;
  url?: string;
  status?: number;
  expected?: string;
  actual?: string;
  path?: string;
  cause?: unknown;
}

export abstract class LoomError extends Error {
  abstract readonly code: string;
  abstract readonly exitCode: ExitCode;
  /** Status a Loom service answers with when this error reaches a client. */
  readonly httpStatus: number = 500;
  readonly hint: string | undefined;
  readonly url: string | undefined;
  readonly status: number | undefined;
  readonly expected: string | undefined;
  readonly actual: string | undefined;
  readonly path: string | undefined;

  constructor(message: string, details: LoomErrorDetails = {}) {
    super(details.hint ? `${message}; ${details.hint}` : message, { cause: details.cause });
    this.name = new.target.name;
    this.hint = details.hint;
    this.url = details.url;
    this.status = details.status;
    this.expected = details.expected;
    this.actual = details.actual;
    this.path = details.path;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      ...(this.url !== undefined && { url: this.url }),
      ...(this.status !== undefined && { status: this.status }),
      ...(this.expected !== undefined && { expected: this.expected }),
      ...(this.actual !== undefined && { actual: this.actual }),
      ...(this.path !== undefined && { path: this.path }),
    };
  }
}

/** A flag, option or argument is malformed or out of range. */
export class UsageError extends LoomError {
  readonly code = 'LOOM_ERR_USAGE';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 400;
}

/** A URL cannot be parsed or uses a scheme Loom does not fetch. */
export class InvalidUrlError extends LoomError {
  readonly code = 'LOOM_ERR_INVALID_URL';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 400;
}

/** The origin answered with a status that retrying cannot fix (most 4xx). */
export class HttpStatusError extends LoomError {
  readonly code = 'LOOM_ERR_HTTP_STATUS';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
  /** Seconds the server asked us to wait (Retry-After), when it said. */
  readonly retryAfterMs: number | undefined;
  readonly retryable: boolean;
  constructor(message: string, details: LoomErrorDetails & { retryAfterMs?: number; retryable?: boolean }) {
    super(message, details);
    this.retryAfterMs = details.retryAfterMs;
    this.retryable = details.retryable ?? false;
  }
}

/** Connection failed, reset or stalled, and every retry was used up. */
export class NetworkError extends LoomError {
  readonly code = 'LOOM_ERR_NETWORK';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
}

/** No byte arrived for the stall timeout; the request was aborted. */
export class StallError extends LoomError {
  readonly code = 'LOOM_ERR_STALLED';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 504;
}

/** The server broke the HTTP range contract (wrong Content-Range, short or long body). */
export class BadResponseError extends LoomError {
  readonly code = 'LOOM_ERR_BAD_RESPONSE';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
}

/** More redirects than allowed, or a redirect without a usable Location. */
export class RedirectError extends LoomError {
  readonly code = 'LOOM_ERR_REDIRECT';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
}

/** The remote file changed (ETag, Last-Modified or size) while it was being fetched. */
export class SourceChangedError extends LoomError {
  readonly code = 'LOOM_ERR_SOURCE_CHANGED';
  readonly exitCode = EXIT.integrity;
  override readonly httpStatus = 409;
}

/** The bytes' sha256 is not the one expected. */
export class DigestMismatchError extends LoomError {
  readonly code = 'LOOM_ERR_DIGEST_MISMATCH';
  readonly exitCode = EXIT.integrity;
  override readonly httpStatus = 422;
}

/** The disk is full (ENOSPC, EDQUOT). */
export class DiskFullError extends LoomError {
  readonly code = 'LOOM_ERR_DISK_FULL';
  readonly exitCode = EXIT.disk;
  override readonly httpStatus = 507;
}

/** A path cannot be created, written or renamed (EACCES, EROFS, ENOENT, EISDIR…). */
export class DiskAccessError extends LoomError {
  readonly code = 'LOOM_ERR_DISK_ACCESS';
  readonly exitCode = EXIT.disk;
  override readonly httpStatus = 500;
}

/** The cache directory or its index cannot be used. */
export class CacheError extends LoomError {
  readonly code = 'LOOM_ERR_CACHE';
  readonly exitCode = EXIT.cache;
  override readonly httpStatus = 500;
}

/** A cached blob failed verification. */
export class CorruptBlobError extends LoomError {
  readonly code = 'LOOM_ERR_CORRUPT_BLOB';
  readonly exitCode = EXIT.integrity;
  override readonly httpStatus = 500;
}

/** The operation was cancelled (AbortSignal, Ctrl-C). */
export class AbortedError extends LoomError {
  readonly code = 'LOOM_ERR_ABORTED';
  readonly exitCode = EXIT.interrupted;
  override readonly httpStatus = 499;
}

/** A request to a Loom service failed validation. */
export class ValidationError extends LoomError {
  readonly code = 'LOOM_ERR_VALIDATION';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 400;
}

/** A write (or a protected read) to a Loom service lacked a valid bearer token. */
export class UnauthorizedError extends LoomError {
  readonly code = 'LOOM_ERR_UNAUTHORIZED';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 401;
}

/** The thing asked for does not exist. */
export class NotFoundError extends LoomError {
  readonly code = 'LOOM_ERR_NOT_FOUND';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 404;
}

/** A write conflicts with what is recorded (first writer wins). */
export class ConflictError extends LoomError {
  readonly code = 'LOOM_ERR_CONFLICT';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 409;
}

/** The control plane's store (SQLite, Redis) cannot be reached. */
export class StoreUnavailableError extends LoomError {
  readonly code = 'LOOM_ERR_STORE_UNAVAILABLE';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 503;
}

/** Another control-plane process (or store) has the SQLite store's file open: one per file. */
export class StoreLockedError extends LoomError {
  readonly code = 'LOOM_ERR_STORE_LOCKED';
  readonly exitCode = EXIT.locked;
  override readonly httpStatus = 409;
}

/** The host name of a URL or proxy does not resolve (DNS ENOTFOUND): retrying cannot help. */
export class HostNotFoundError extends LoomError {
  readonly code = 'LOOM_ERR_HOST_NOT_FOUND';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
  readonly retryable = false;
}

/** The server's TLS certificate is not trusted, has expired or names another host. */
export class TlsError extends LoomError {
  readonly code = 'LOOM_ERR_TLS';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
  readonly retryable = false;
}

/** Nothing accepts connections at the host and port: worth `maxAttempts` quick tries at most. */
export class ConnectionRefusedError extends LoomError {
  readonly code = 'LOOM_ERR_CONN_REFUSED';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
  readonly retryable = true;
  readonly maxAttempts = 3;
}

/** A response came compressed although identity was asked for: its ranges cannot be used. */
export class ContentEncodingError extends LoomError {
  readonly code = 'LOOM_ERR_CONTENT_ENCODING';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
  readonly retryable = false;
}

/** The proxy (HTTPS_PROXY, HTTP_PROXY) refused or failed the tunnel; 5xx from it may heal. */
export class ProxyError extends LoomError {
  readonly code = 'LOOM_ERR_PROXY';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
  readonly retryable: boolean;
  constructor(message: string, details: LoomErrorDetails & { retryable?: boolean }) {
    super(message, details);
    this.retryable = details.retryable ?? false;
  }
}

/** An authenticated caller asked for something its credential does not allow (a node acting for another). */
export class ForbiddenError extends LoomError {
  readonly code = 'LOOM_ERR_FORBIDDEN';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 403;
}

/** An address to listen on is taken or not allowed (EADDRINUSE, EACCES, EADDRNOTAVAIL). */
export class ListenError extends LoomError {
  readonly code = 'LOOM_ERR_LISTEN';
  readonly exitCode = EXIT.listen;
  override readonly httpStatus = 500;
}

// --- Hugging Face Hub: the Hub's own error answers (X-Error-Code, 401, 429), one class each.

/** The Hub has no such repo (or it is private and no valid token was given). */
export class HubRepoNotFoundError extends LoomError {
  readonly code = 'LOOM_ERR_HUB_REPO_NOT_FOUND';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 404;
}

/** The repo is gated: it needs a token whose user was granted access. */
export class HubGatedRepoError extends LoomError {
  readonly code = 'LOOM_ERR_HUB_GATED_REPO';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 403;
}

/** The branch, tag or commit does not exist in the repo. */
export class HubRevisionNotFoundError extends LoomError {
  readonly code = 'LOOM_ERR_HUB_REVISION_NOT_FOUND';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 404;
}

/** The file does not exist at that revision. */
export class HubEntryNotFoundError extends LoomError {
  readonly code = 'LOOM_ERR_HUB_ENTRY_NOT_FOUND';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 404;
}

/** The Hub refused the token (401 without a more precise error code). */
export class HubUnauthorizedError extends LoomError {
  readonly code = 'LOOM_ERR_HUB_UNAUTHORIZED';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 401;
}

/** The Hub kept answering 429 (rate limited) beyond the retries and the Retry-After allowed. */
export class HubRateLimitedError extends LoomError {
  readonly code = 'LOOM_ERR_HUB_RATE_LIMITED';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 429;
}

/** HF_HUB_OFFLINE is set and what was asked for is not in the local HF cache. */
export class HubOfflineError extends LoomError {
  readonly code = 'LOOM_ERR_HUB_OFFLINE';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 503;
}

/** No source left can serve a part of the blob still missing (every one dropped or lacking it). */
export class NoSourceError extends LoomError {
  readonly code = 'LOOM_ERR_NO_SOURCE';
  readonly exitCode = EXIT.network;
  override readonly httpStatus = 502;
}

/** Another running download holds the same output's partial file. */
export class OutputBusyError extends LoomError {
  readonly code = 'LOOM_ERR_OUTPUT_BUSY';
  readonly exitCode = EXIT.disk;
  override readonly httpStatus = 409;
}

/** S3 refused the request's credentials or signature (wrong keys, expired token, no access). */
export class S3AccessDeniedError extends LoomError {
  readonly code = 'LOOM_ERR_S3_ACCESS_DENIED';
  readonly exitCode = EXIT.usage;
  override readonly httpStatus = 502;
}

/** Every error class, for tests and docs that list codes with their exit and HTTP statuses. */
export const ERROR_CLASSES = [
  UsageError,
  InvalidUrlError,
  HttpStatusError,
  NetworkError,
  StallError,
  BadResponseError,
  RedirectError,
  SourceChangedError,
  DigestMismatchError,
  DiskFullError,
  DiskAccessError,
  CacheError,
  CorruptBlobError,
  AbortedError,
  ValidationError,
  UnauthorizedError,
  NotFoundError,
  ConflictError,
  StoreUnavailableError,
  StoreLockedError,
  HostNotFoundError,
  TlsError,
  ConnectionRefusedError,
  ContentEncodingError,
  ProxyError,
  ForbiddenError,
  ListenError,
  HubRepoNotFoundError,
  HubGatedRepoError,
  HubRevisionNotFoundError,
  HubEntryNotFoundError,
  HubUnauthorizedError,
  HubRateLimitedError,
  HubOfflineError,
  NoSourceError,
  OutputBusyError,
  S3AccessDeniedError,
] as const;

/** What the CLI and the services report for an unexpected failure (a bug); not a class. */
export const INTERNAL_ERROR_CODE = 'LOOM_ERR_INTERNAL';

export type ErrorCode = InstanceType<(typeof ERROR_CLASSES)[number]>['code'] | typeof INTERNAL_ERROR_CODE;

/** Every code, derived from the classes: the README's table is checked against this list. */
export const ERROR_CODES: readonly ErrorCode[] = [
  ...ERROR_CLASSES.map((ErrorClass) => new ErrorClass('', {}).code),
  INTERNAL_ERROR_CODE,
];

/** The error every cancelled operation ends with (AbortSignal, Ctrl-C). */
export function cancelled(hint = 'the partial download is kept; rerun the same command to resume'): AbortedError {
  return new AbortedError('download cancelled', { hint });
}

interface SystemError {
  code?: string;
  path?: string;
}

/** Turns an fs error into a LoomError that says what to do. */
export function diskError(err: unknown, what: string, file?: string): LoomError {
  if (err instanceof LoomError) return err;
  const sys = (err ?? {}) as SystemError;
  const path = sys.path ?? file;
  switch (sys.code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new DiskFullError(`no space left while ${what}`, {
        path,
        cause: err,
        hint: 'free space on that file system (the partial download is kept; rerun to resume)',
      });
    case 'EACCES':
    case 'EPERM':
      return new DiskAccessError(`permission denied while ${what}`, {
        path,
        cause: err,
        hint: 'choose a directory you can write to, or fix its permissions',
      });
    case 'EROFS':
      return new DiskAccessError(`read-only file system while ${what}`, {
        path,
        cause: err,
        hint: 'choose a writable location',
      });
    case 'ENOENT':
      return new DiskAccessError(`directory does not exist while ${what}`, {
        path,
        cause: err,
        hint: 'create the directory first or choose another path',
      });
    case 'ENOTDIR':
      // A file where a folder is expected (`--cache-dir model.bin/x`): creating it cannot help.
      return new DiskAccessError(`a part of the path is not a directory while ${what}`, {
        path,
        cause: err,
        hint: 'a file stands where a directory is expected; choose another path',
      });
    case 'EISDIR':
      return new DiskAccessError(`path is a directory while ${what}`, {
        path,
        cause: err,
        hint: 'give a file name, not a directory',
      });
    default:
      return new DiskAccessError(
        `${sys.code ?? 'I/O error'} while ${what}: ${err instanceof Error ? err.message : String(err)}`,
        { path, cause: err },
      );
  }
}

export function isAbortError(err: unknown): boolean {
  return (
    err instanceof AbortedError ||
    (err instanceof Error && (err.name === 'AbortError' || (err as SystemError).code === 'ABORT_ERR'))
  );
}
