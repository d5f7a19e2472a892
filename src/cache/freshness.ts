// Whether a cached copy may be served: one conditional request to the origin, unless offline.
// The origin's answer is read, not guessed: 304 (or the same validator) serves the copy, a
// new version is a miss, and a refusal (401/403: access revoked or credentials missing;
// 404/410: the object withdrawn) is the user's error, not a reason to serve the copy. Only
// an origin that cannot be asked (network, timeout, 5xx) leaves the copy in service, with a
// warning.
import { HttpStatusError } from '../core/errors.js';
import type { Source, Validator } from '../sources/source.js';

export interface FreshnessCheck {
  offline: boolean;
  timeoutMs: number;
  status: (message: string) => void;
  signal: AbortSignal | undefined;
}

/** Statuses by which the origin says the caller may not have the object (any more). */
const REFUSALS = new Set([401, 403, 404, 410]);

/** True for an origin's answer that forbids serving a cached copy of the object. */
export function isOriginRefusal(err: unknown): boolean {
  return err instanceof HttpStatusError && err.status !== undefined && REFUSALS.has(err.status);
}

export async function isFresh(validator: Validator, source: Source, check: FreshnessCheck): Promise<boolean> {
  const { offline, timeoutMs, status, signal } = check;
  if (offline || !source.revalidate) return true;
  try {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    const combined = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
    try {
      return (await source.revalidate(validator, combined, timeoutMs)) === 'fresh';
    } finally {
      clearTimeout(timer);
    }
  } catch (err) {
    if (signal?.aborted || isOriginRefusal(err)) throw err;
    status(`could not check ${source.url} for a newer version (${(err as Error).message}); using the cached copy`);
    return true;
  }
}
