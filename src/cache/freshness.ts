// Whether a cached copy may be served: one conditional request to the origin, unless offline.
// An origin that cannot be asked leaves the cached copy in service, with a warning.
import type { Source, Validator } from '../sources/source.js';

export interface FreshnessCheck {
  offline: boolean;
  timeoutMs: number;
  status: (message: string) => void;
  signal: AbortSignal | undefined;
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
    if (signal?.aborted) throw err;
    status(`could not check ${source.url} for a newer version (${(err as Error).message}); using the cached copy`);
    return true;
  }
}
