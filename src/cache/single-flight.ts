// One download per source per node: the first process takes the source's lock and
// downloads; the others wait, then take the finished blob. The lock's mtime is refreshed
// every second; one not refreshed for 5 s belongs to a dead process and is taken over, and
// the new owner resumes the dead one's partial file (same path, same journal).
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, CacheError } from '../core/errors.js';
import type { CacheLayout } from './cache-root.js';

/** proper-lockfile's minimum: a lock not refreshed for this long is stale. */
export const LOCK_STALE_MS = 5_000;
const LOCK_UPDATE_MS = 1_000;

export interface HeldLock {
  release(): Promise<void>;
  /** Aborts when another process took the lock over (this one looked dead). */
  lost: AbortSignal;
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** Called once when another process is found downloading the source. */
  onWait?: () => void;
  /** Polled while waiting: true when the other process has finished the work. */
  isDone: () => Promise<boolean>;
  pollMs?: number;
}

export function keyHash(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 32);
}

/** Takes the source's lock, or returns 'done' if another process finished it meanwhile. */
export async function acquireSourceLock(
  layout: CacheLayout,
  key: string,
  options: WaitOptions,
): Promise<HeldLock | 'done'> {
  // Loaded here, on the miss path only: a cache hit does not pay for it.
  const { default: lockfile } = await import('proper-lockfile');
  const lockTarget = `${layout.locks}/source-${keyHash(key)}`;
  let announced = false;
  for (;;) {
    if (options.signal?.aborted) throw new AbortedError('cancelled while waiting for another download');
    const lost = new AbortController();
    try {
      const release = await lockfile.lock(lockTarget, {
        realpath: false,
        stale: LOCK_STALE_MS,
        update: LOCK_UPDATE_MS,
        retries: 0,
        onCompromised: () => lost.abort(new CacheError('another process took over this download')),
      });
      return { release: () => release().catch(() => undefined), lost: lost.signal };
    } catch (err) {
      if ((err as { code?: string }).code !== 'ELOCKED') {
        throw new CacheError(`cannot lock ${lockTarget}: ${(err as Error).message}`, { cause: err, path: lockTarget });
      }
    }
    if (await options.isDone()) return 'done';
    if (!announced) {
      announced = true;
      options.onWait?.();
    }
    await sleep(options.pollMs ?? 200);
  }
}
