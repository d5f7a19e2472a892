// One download per source per node: the first process takes the source's lock and
// downloads; the others wait, then take the finished blob. A lock is stale when its owner's
// pid is gone (it writes `<lock>.owner` with its pid, host and the lock's inode), or when its
// mtime, refreshed every second, has not moved for 5 s (a hung owner, or another host on a
// shared file system). A stale lock is taken over, and the new owner resumes the old one's
// partial file (same path, same journal).
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, CacheError } from '../core/errors.js';
import { isProcessAlive } from '../core/processes.js';
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
  /** Called when the process holding the lock is found dead, before its lock is taken over. */
  onOwnerGone?: (pid: number) => void;
  /** Polled while waiting: true when the other process has finished the work. */
  isDone: () => Promise<boolean>;
  pollMs?: number;
}

interface LockOwner {
  pid: number;
  host: string;
  /** The lock directory this owner created: a later owner's lock has another inode. */
  lockIno: number;
}

/** Best effort: without the record, waiters fall back on the heartbeat. */
function recordOwner(lockDir: string, ownerFile: string): void {
  try {
    const owner: LockOwner = { pid: process.pid, host: hostname(), lockIno: statSync(lockDir).ino };
    writeFileSync(ownerFile, JSON.stringify(owner));
  } catch {
    /* an older record names another lock directory (inode), so it is not believed */
  }
}

/** Removes this process's record (not a later owner's, after a takeover). */
function forgetOwner(ownerFile: string): void {
  try {
    if ((JSON.parse(readFileSync(ownerFile, 'utf8')) as LockOwner).pid === process.pid) rmSync(ownerFile);
  } catch {
    /* none, or unreadable: nothing of ours to remove */
  }
}

/** The owner of the lock at `lockDir` if it is a process of this host that no longer runs. */
function deadOwner(lockDir: string, ownerFile: string): LockOwner | undefined {
  try {
    const owner = JSON.parse(readFileSync(ownerFile, 'utf8')) as LockOwner;
    if (owner.host !== hostname() || statSync(lockDir).ino !== owner.lockIno) return undefined;
    return isProcessAlive(owner.pid) ? undefined : owner;
  } catch {
    return undefined; // no owner recorded (yet): the heartbeat decides
  }
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
  const lockDir = `${lockTarget}.lock`;
  const ownerFile = `${lockTarget}.owner`;
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
      recordOwner(lockDir, ownerFile);
      return {
        release: async () => {
          forgetOwner(ownerFile);
          await release().catch(() => undefined);
        },
        lost: lost.signal,
      };
    } catch (err) {
      if ((err as { code?: string }).code !== 'ELOCKED') {
        throw new CacheError(`cannot lock ${lockTarget}: ${(err as Error).message}`, { cause: err, path: lockTarget });
      }
    }
    if (await options.isDone()) return 'done';
    const dead = deadOwner(lockDir, ownerFile);
    if (dead) {
      options.onOwnerGone?.(dead.pid);
      // An mtime in the distant past makes the lock stale to proper-lockfile, which then takes
      // it over with its own atomic steps (and warns the old owner, were it alive, through
      // onCompromised).
      try {
        utimesSync(lockDir, 0, 0);
      } catch {
        /* released meanwhile: the next attempt takes it */
      }
      continue;
    }
    if (!announced) {
      announced = true;
      options.onWait?.();
    }
    await sleep(options.pollMs ?? 200);
  }
}
