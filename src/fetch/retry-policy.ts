// When to try a failed request again and how long to wait first: exponential backoff with
// full jitter (spreads a fleet's retries apart), floored by the server's Retry-After.
import { setTimeout as sleep } from 'node:timers/promises';
import { cancelled, BadResponseError, HttpStatusError, LoomError, NetworkError, StallError } from '../core/errors.js';

export interface RetryOptions {
  /** Attempts per chunk, the first included. Default DEFAULTS.retry.attempts (6). */
  attempts: number;
  /** First backoff ceiling. Default 1 s. */
  baseDelayMs: number;
  /** Growth of the ceiling per attempt. Default 2. */
  factor: number;
  /** Largest backoff ceiling. Default 30 s. */
  maxDelayMs: number;
  /** A longer Retry-After fails at once. Default 120 s. */
  maxRetryAfterMs: number;
}

/** True when another attempt may succeed: network faults, stalls, lies, 5xx, 408, 429. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof HttpStatusError) return err.retryable;
  if (err instanceof StallError || err instanceof BadResponseError || err instanceof NetworkError) return true;
  if (err instanceof LoomError) return false;
  // Plain Node errors on a socket (ECONNRESET, EPIPE, ECONNREFUSED, 'aborted'…).
  return err instanceof Error;
}

// The HTTP facts live with the sources that raise the errors.
export { isRetryableStatus, parseRetryAfter } from '../sources/http-retry.js';

/** The wait before attempt number `attempt + 1` (attempt counts from 1). */
export function backoffDelay(
  policy: RetryOptions,
  attempt: number,
  retryAfterMs?: number,
  random = Math.random,
): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * policy.factor ** (attempt - 1));
  const jittered = random() * ceiling;
  return retryAfterMs === undefined ? jittered : Math.max(retryAfterMs, jittered);
}

export async function waitBeforeRetry(delayMs: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(delayMs, undefined, { signal });
  } catch {
    throw cancelled();
  }
}
