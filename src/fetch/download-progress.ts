// What a running download tells its progress display: bytes on disk and in flight, requests
// open, and the attempts waiting out a retry's backoff (how many, why the latest failed, when
// the next one goes). The waits are kept here because a wait is shown the moment it starts.
// And the stats of how far the digest lagged behind the last byte.
import { BadResponseError, HttpStatusError, StallError } from '../core/errors.js';
import type { FetchProgress, RetryWait } from './download-types.js';
import type { RangeSet } from './range-set.js';
import { waitBeforeRetry } from './retry-policy.js';
import type { DownloadStats } from './stats.js';

/** A failure in a few characters, for "retrying 3 ranges: 503". */
function shortReason(err: unknown): string {
  if (err instanceof HttpStatusError && err.status !== undefined) return String(err.status);
  if (err instanceof StallError) return 'stalled';
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  if (err instanceof BadResponseError) return 'bad response';
  return 'network error';
}

/** The download's state a snapshot reads. */
export interface ProgressView {
  size: number | undefined;
  ranges: RangeSet;
  resumable: boolean;
}

export class DownloadProgress {
  /** Requests with a response open right now. */
  activeRequests = 0;
  /** Attempts waiting out their backoff: when each retries, and why it failed. */
  private readonly waits = new Map<object, { until: number; reason: string }>();
  private lastByteAt: number | undefined;
  /** The finished prefix before the latest write (stats.prefixBehindAtLastByte). */
  private prefixBeforeLastByte = 0;

  constructor(
    private readonly stats: DownloadStats,
    private readonly onProgress: ((progress: FetchProgress) => void) | undefined,
    private readonly view: () => ProgressView,
  ) {}

  /** `length` bytes were written; the finished prefix was `prefixBefore` until then. */
  received(length: number, prefixBefore: number): void {
    this.prefixBeforeLastByte = prefixBefore;
    this.stats.transferredBytes += length;
    this.lastByteAt = performance.now();
  }

  /** The whole-file digest of `size` bytes is known: how long after the last byte it came. */
  digested(size: number): void {
    if (this.lastByteAt === undefined) return;
    this.stats.lastByteToDigestSeconds = Math.max(0, (performance.now() - this.lastByteAt) / 1000);
    this.stats.prefixBehindAtLastByte = size - this.prefixBeforeLastByte;
  }

  /** Waits `delayMs` before `who` tries again, shown to progress displays meanwhile. */
  async backoff(who: object, err: unknown, delayMs: number, signal: AbortSignal): Promise<void> {
    this.stats.retries++;
    this.waits.set(who, { until: performance.now() + delayMs, reason: shortReason(err) });
    // Said at once, not at the next tick: a display shows the wait as it starts.
    this.report();
    try {
      await waitBeforeRetry(delayMs, signal);
    } finally {
      this.waits.delete(who);
    }
  }

  report(): void {
    if (!this.onProgress) return;
    const { size, ranges, resumable } = this.view();
    this.onProgress({
      totalBytes: size,
      doneBytes: ranges.size,
      transferredBytes: this.stats.transferredBytes,
      activeRequests: this.activeRequests,
      retries: this.stats.retries,
      contiguousBytes: ranges.contiguousPrefix(),
      resumable,
      retrying: this.retryWait(),
    });
  }

  private retryWait(): RetryWait | undefined {
    if (this.waits.size === 0) return undefined;
    const waits = [...this.waits.values()];
    const now = performance.now();
    return {
      ranges: waits.length,
      reason: waits[waits.length - 1]!.reason,
      nextInMs: Math.max(0, Math.min(...waits.map((w) => w.until)) - now),
    };
  }
}
