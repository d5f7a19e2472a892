// The public options of fetchFile, validated once up front (unknown keys are refused, sizes
// and durations accept human units) and resolved against DEFAULTS.
import { DEFAULTS } from '../core/defaults.js';
import { UsageError } from '../core/errors.js';
import { parseDuration, parseSize } from '../core/units.js';
import { checkBoolean, checkInteger, checkKnownKeys, checkOneOf, isRecord } from '../core/validate.js';
import type { DownloadOptions, FetchProgress } from './download.js';
import type { Preallocation } from './part-file.js';
import type { RequestSlots } from './request-pool.js';
import type { SourceOptions } from '../sources/index.js';

/** Options of fetchFile. Every field is optional; the default is named beside it. */
export interface FetchOptions {
  /** Requests in flight, 1 to 256. Default 16. */
  workers?: number;
  /** Request size (requests are handed out in file order), bytes or `10MiB`. Default 10 MiB. */
  chunkSize?: number | string;
  /** Largest single request, bytes or `64MiB`. Default: a chunk. */
  maxRequestSize?: number | string;
  /** Expected sha256 (hex); a mismatch fails and keeps nothing. Default: none. */
  sha256?: string;
  /** Extra request headers, sent to the origin host only. Default: none. */
  headers?: Record<string, string>;
  /** Abort a request that sends no byte for this long (ms or `30s`). Default 30 s. */
  stallTimeout?: number | string;
  /** Attempts per chunk, the first included. Default 6. */
  retryAttempts?: number;
  /** First backoff ceiling (ms or `1s`). Default 1 s; doubles per attempt. */
  retryBaseDelay?: number | string;
  /** Largest backoff (ms or `30s`). Default 30 s. */
  retryMaxDelay?: number | string;
  /** A longer Retry-After fails at once (ms or `2m`). Default 2 min. */
  maxRetryAfter?: number | string;
  /** Redirects to follow. Default 10. */
  maxRedirects?: number;
  /** PEM files to trust besides the system roots and NODE_EXTRA_CA_CERTS. */
  caCertFiles?: string[];
  /** Compute the sha256 even when none is expected. Default false. */
  computeSha256?: boolean;
  /** Start over once if the file changes mid-download (else fail). Default true. */
  restartOnChange?: boolean;
  /** fdatasync the file before it is renamed into place. Default true. */
  fsync?: boolean;
  /**
   * How space is reserved: `truncate` (default: a sparse file after a free-space check) or
   * `fallocate` (blocks reserved up front; writing into them measured ~0.5 s/GiB slower on ext4).
   */
  preallocation?: Preallocation;
  /** How often the resume journal is saved (ms). Default 500. */
  journalInterval?: number | string;
  signal?: AbortSignal;
  /** Called about ten times a second with the download's state. */
  onProgress?: (progress: FetchProgress) => void;
  /** Follow a redirect from https to http (credentials are dropped either way). Default false. */
  allowHttpsDowngrade?: boolean;
  /**
   * Share one budget of requests in flight with other downloads (a RequestPool, or a
   * PoolMember of one): `workers` is then this download's most. Default: none.
   */
  requestPool?: RequestSlots;
}

const KNOWN_KEYS = [
  'workers',
  'chunkSize',
  'maxRequestSize',
  'sha256',
  'headers',
  'stallTimeout',
  'retryAttempts',
  'retryBaseDelay',
  'retryMaxDelay',
  'maxRetryAfter',
  'maxRedirects',
  'caCertFiles',
  'computeSha256',
  'restartOnChange',
  'fsync',
  'preallocation',
  'journalInterval',
  'signal',
  'onProgress',
  'allowHttpsDowngrade',
  'requestPool',
] as const;

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const MIN_CHUNK = 64 * 1024;

function sizeOption(value: number | string | undefined, field: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  const bytes = parseSize(value, field);
  if (bytes < min) throw new UsageError(`invalid option ${field}: must be at least ${min} bytes`);
  return bytes;
}

function durationOption(value: number | string | undefined, field: string): number | undefined {
  return value === undefined ? undefined : parseDuration(value, field);
}

function sha256Option(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !/^[0-9a-fA-F]{64}$/.test(value)) {
    throw new UsageError('invalid option sha256: must be 64 hex digits');
  }
  return value.toLowerCase();
}

function headersOption(value: unknown): Record<string, string> {
  if (value === undefined) return {};
  if (!isRecord(value)) throw new UsageError('invalid option headers: must be an object of name: value');
  for (const [name, v] of Object.entries(value)) {
    if (!HEADER_NAME.test(name)) throw new UsageError(`invalid header name "${name}"`);
    if (typeof v !== 'string' || /[\r\n]/.test(v)) throw new UsageError(`invalid value for header ${name}`);
  }
  return value as Record<string, string>;
}

export interface ResolvedFetchOptions extends DownloadOptions {
  headers: Record<string, string>;
  stallTimeoutMs: number;
  maxRedirects: number;
  caCertFiles: string[];
  allowHttpsDowngrade: boolean;
}

export function resolveFetchOptions(input: FetchOptions = {}): ResolvedFetchOptions {
  if (!isRecord(input as unknown)) throw new UsageError('fetch options must be an object');
  checkKnownKeys(input, KNOWN_KEYS, 'fetch option');
  const chunkSize = sizeOption(input.chunkSize, 'chunkSize', MIN_CHUNK) ?? DEFAULTS.chunkSize;
  if (input.signal !== undefined && !(input.signal instanceof AbortSignal)) {
    throw new UsageError('invalid option signal: must be an AbortSignal');
  }
  if (input.onProgress !== undefined && typeof input.onProgress !== 'function') {
    throw new UsageError('invalid option onProgress: must be a function');
  }
  if (
    input.caCertFiles !== undefined &&
    !(Array.isArray(input.caCertFiles) && input.caCertFiles.every((f) => typeof f === 'string'))
  ) {
    throw new UsageError('invalid option caCertFiles: must be a list of file paths');
  }
  if (input.requestPool !== undefined && typeof (input.requestPool as { acquire?: unknown }).acquire !== 'function') {
    throw new UsageError('invalid option requestPool: must be a RequestPool');
  }
  const stallTimeoutMs = durationOption(input.stallTimeout, 'stallTimeout') ?? DEFAULTS.stallTimeoutMs;
  if (stallTimeoutMs < 1) throw new UsageError('invalid option stallTimeout: must be positive');
  return {
    workers: checkInteger(input.workers, 'workers', DEFAULTS.minWorkers, DEFAULTS.maxWorkers) ?? DEFAULTS.workers,
    chunkSize,
    maxRequestSize: sizeOption(input.maxRequestSize, 'maxRequestSize', MIN_CHUNK),
    // A quarter chunk, within [64 KiB, 1 MiB]: smaller pieces cost more in requests than they save.
    minSplitSize: Math.min(DEFAULTS.minSplitSize, Math.max(MIN_CHUNK, Math.floor(chunkSize / 4))),
    retry: {
      attempts: checkInteger(input.retryAttempts, 'retryAttempts', 1, 100) ?? DEFAULTS.retry.attempts,
      baseDelayMs: durationOption(input.retryBaseDelay, 'retryBaseDelay') ?? DEFAULTS.retry.baseDelayMs,
      factor: DEFAULTS.retry.factor,
      maxDelayMs: durationOption(input.retryMaxDelay, 'retryMaxDelay') ?? DEFAULTS.retry.maxDelayMs,
      maxRetryAfterMs: durationOption(input.maxRetryAfter, 'maxRetryAfter') ?? DEFAULTS.retry.maxRetryAfterMs,
    },
    expectedSha256: sha256Option(input.sha256),
    computeSha256: checkBoolean(input.computeSha256, 'computeSha256') ?? false,
    journalIntervalMs: durationOption(input.journalInterval, 'journalInterval') ?? DEFAULTS.journalIntervalMs,
    preallocation: checkOneOf(input.preallocation, 'preallocation', ['fallocate', 'truncate'] as const) ?? 'truncate',
    restartOnChange: checkBoolean(input.restartOnChange, 'restartOnChange') ?? true,
    fsync: checkBoolean(input.fsync, 'fsync') ?? true,
    signal: input.signal,
    onProgress: input.onProgress,
    requestSlots: input.requestPool,
    headers: headersOption(input.headers),
    stallTimeoutMs,
    maxRedirects: checkInteger(input.maxRedirects, 'maxRedirects', 0, 50) ?? DEFAULTS.maxRedirects,
    caCertFiles: input.caCertFiles ?? [],
    allowHttpsDowngrade: checkBoolean(input.allowHttpsDowngrade, 'allowHttpsDowngrade') ?? false,
  };
}

/** What a source needs from the fetch options (sourceFor's second argument). */
export function sourceOptionsOf(options: ResolvedFetchOptions): SourceOptions {
  return {
    headers: options.headers,
    maxRedirects: options.maxRedirects,
    stallTimeoutMs: options.stallTimeoutMs,
    // Two sockets per worker: a worker opens its next request before its current one ends.
    maxSockets: options.workers * 2,
    caCertFiles: options.caCertFiles,
    allowHttpsDowngrade: options.allowHttpsDowngrade,
  };
}
