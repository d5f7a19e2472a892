// What a download does after a request failed: retry the range (after a backoff, or the
// server's Retry-After), drop the source that failed, or stop. The budget is per range and
// per source, and both reset when an attempt makes progress, so a proxy that cuts every
// connection after N bytes slows a download down but does not end it.
import {
  DiskAccessError,
  DiskFullError,
  HttpStatusError,
  LoomError,
  NetworkError,
  SourceChangedError,
  isAbortError,
} from '../core/errors.js';
import { plural } from '../core/units.js';
import { backoffDelay, isRetryable, type RetryOptions } from './retry-policy.js';

export type FailureDecision =
  /** Try the range again after `delayMs`; `hold` when the server asked for the wait. */
  | { kind: 'retry'; delayMs: number; hold: boolean }
  /** This source is of no more use to this download. */
  | { kind: 'drop-source'; reason: LoomError }
  /** The download cannot go on (a local failure, a cancel). */
  | { kind: 'fatal'; error: unknown };

export interface Budget {
  /** Failed attempts of the range since it last made progress. */
  attempts: number;
}

/** Decides after a failed attempt; counts it against the range's and the source's budget. */
export function decideAfterFailure(
  err: unknown,
  range: Budget,
  /** failuresInARow counts every worker's failures: the limit is attempts per connection. */
  source: { failuresInARow: number; maxConcurrency: number },
  retry: RetryOptions,
  what: string,
  url: string,
): FailureDecision {
  if (isAbortError(err)) return { kind: 'fatal', error: err };
  // The local disk, not the source, failed: no other source would do better.
  if (err instanceof DiskFullError || err instanceof DiskAccessError) return { kind: 'fatal', error: err };
  if (!isRetryable(err)) return { kind: 'drop-source', reason: asLoomError(err, url, what) };
  range.attempts++;
  source.failuresInARow++;
  if (range.attempts >= retry.attempts || source.failuresInARow >= retry.attempts * source.maxConcurrency) {
    return { kind: 'drop-source', reason: exhausted(err, url, range.attempts, what) };
  }
  const retryAfterMs = err instanceof HttpStatusError ? err.retryAfterMs : undefined;
  if (retryAfterMs !== undefined && retryAfterMs > retry.maxRetryAfterMs) {
    return {
      kind: 'drop-source',
      reason: new NetworkError(`${url} asked to retry after ${Math.round(retryAfterMs / 1000)} s`, {
        url,
        cause: err,
        hint: 'try again later, or raise the maximum Retry-After (--max-retry-after)',
      }),
    };
  }
  return {
    kind: 'retry',
    delayMs: backoffDelay(retry, range.attempts, retryAfterMs),
    hold: retryAfterMs !== undefined,
  };
}

function asLoomError(err: unknown, url: string, what: string): LoomError {
  if (err instanceof LoomError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new NetworkError(`${what} of ${url} failed: ${reason}`, { url, cause: err });
}

const RETRY_LATER = 'check the network or the origin, then rerun';
const RESUMED = `${RETRY_LATER}: finished bytes are kept and resumed`;

/**
 * A download that gave up keeps its finished bytes for a rerun, and its error says so; where
 * nothing was kept after all (a server without ranges, `-o -`), the error says `why` instead.
 */
export function withoutResume(err: unknown, why: string): unknown {
  if (!(err instanceof NetworkError) || err.hint !== RESUMED) return err;
  return new NetworkError(err.message.slice(0, -`; ${RESUMED}`.length), {
    url: err.url,
    cause: err.cause,
    hint: `${RETRY_LATER}: ${why}`,
  });
}

function exhausted(err: unknown, url: string, attempts: number, what: string): LoomError {
  if (err instanceof HttpStatusError || err instanceof SourceChangedError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new NetworkError(`gave up on ${what} of ${url} after ${plural(attempts, 'attempt')}: ${reason}`, {
    url,
    cause: err,
    hint: RESUMED,
  });
}
