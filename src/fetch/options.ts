// The public options of fetchFile, validated once up front (unknown keys are refused, sizes
// and durations accept human units) and resolved against DEFAULTS.
import { z } from 'zod';
import { DEFAULTS } from '../core/defaults.js';
import { UsageError } from '../core/errors.js';
import { parseDuration, parseSize } from '../core/units.js';
import type { DownloadOptions, FetchProgress } from './download.js';
import type { Preallocation } from './part-file.js';

/** Options of fetchFile. Every field is optional; the default is named beside it. */
export interface FetchOptions {
  /** Requests in flight, 1 to 256. Default 16. */
  workers?: number;
  /** Planning and split unit, bytes or `10MiB`. Default 10 MiB. */
  chunkSize?: number | string;
  /** Largest single request, bytes or `64MiB`. Default: the file split evenly over the workers. */
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
  /** How space is reserved: `fallocate` (default) or a sparse `truncate`. */
  preallocation?: Preallocation;
  /** How often the resume journal is saved (ms). Default 500. */
  journalInterval?: number | string;
  signal?: AbortSignal;
  /** Called about ten times a second with the download's state. */
  onProgress?: (progress: FetchProgress) => void;
}

const size = (what: string) => z.union([z.number(), z.string()]).transform((v) => parseSize(v, what));
const duration = (what: string) => z.union([z.number(), z.string()]).transform((v) => parseDuration(v, what));

const optionsSchema = z.strictObject({
  workers: z.number().int().min(DEFAULTS.minWorkers).max(DEFAULTS.maxWorkers).optional(),
  chunkSize: size('chunk size').pipe(z.number().min(64 * 1024, 'chunk size must be at least 64KiB')).optional(),
  maxRequestSize: size('request size').pipe(z.number().min(64 * 1024)).optional(),
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, 'sha256 must be 64 hex digits')
    .transform((v) => v.toLowerCase())
    .optional(),
  headers: z.record(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'not a valid header name'), z.string()).optional(),
  stallTimeout: duration('stall timeout').pipe(z.number().min(1)).optional(),
  retryAttempts: z.number().int().min(1).max(100).optional(),
  retryBaseDelay: duration('retry base delay').optional(),
  retryMaxDelay: duration('retry max delay').optional(),
  maxRetryAfter: duration('max Retry-After').optional(),
  maxRedirects: z.number().int().min(0).max(50).optional(),
  caCertFiles: z.array(z.string()).optional(),
  computeSha256: z.boolean().optional(),
  restartOnChange: z.boolean().optional(),
  fsync: z.boolean().optional(),
  preallocation: z.enum(['fallocate', 'truncate']).optional(),
  journalInterval: duration('journal interval').optional(),
  signal: z.instanceof(AbortSignal).optional(),
  onProgress: z.custom<(progress: FetchProgress) => void>((v) => typeof v === 'function').optional(),
});

export interface ResolvedFetchOptions extends DownloadOptions {
  headers: Record<string, string>;
  stallTimeoutMs: number;
  maxRedirects: number;
  caCertFiles: string[];
}

export function resolveFetchOptions(input: FetchOptions = {}): ResolvedFetchOptions {
  const parsed = optionsSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || 'options';
    throw new UsageError(`invalid option ${field}: ${issue.message}`);
  }
  const o = parsed.data;
  const chunkSize = o.chunkSize ?? DEFAULTS.chunkSize;
  return {
    workers: o.workers ?? DEFAULTS.workers,
    chunkSize,
    maxRequestSize: o.maxRequestSize,
    // A quarter chunk, within [64 KiB, 1 MiB]: smaller pieces cost more in requests than they save.
    minSplitSize: Math.min(DEFAULTS.minSplitSize, Math.max(64 * 1024, Math.floor(chunkSize / 4))),
    retry: {
      attempts: o.retryAttempts ?? DEFAULTS.retry.attempts,
      baseDelayMs: o.retryBaseDelay ?? DEFAULTS.retry.baseDelayMs,
      factor: DEFAULTS.retry.factor,
      maxDelayMs: o.retryMaxDelay ?? DEFAULTS.retry.maxDelayMs,
      maxRetryAfterMs: o.maxRetryAfter ?? DEFAULTS.retry.maxRetryAfterMs,
    },
    expectedSha256: o.sha256,
    computeSha256: o.computeSha256 ?? false,
    journalIntervalMs: o.journalInterval ?? DEFAULTS.journalIntervalMs,
    preallocation: o.preallocation ?? 'fallocate',
    restartOnChange: o.restartOnChange ?? true,
    fsync: o.fsync ?? true,
    signal: o.signal,
    onProgress: o.onProgress,
    headers: o.headers ?? {},
    stallTimeoutMs: o.stallTimeout ?? DEFAULTS.stallTimeoutMs,
    maxRedirects: o.maxRedirects ?? DEFAULTS.maxRedirects,
    caCertFiles: o.caCertFiles ?? [],
  };
}
