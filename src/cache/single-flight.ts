// One download per source per node: the first process takes the source's lock and
// downloads; the others wait, then take the finished blob. The lock is a POSIX record lock
// (fcntl) on `locks/source-<hash>.lock`, taken through SQLite (src/core/file-lock.ts;
// better-sqlite3 is already loaded on a miss): the kernel releases it when its
// process ends, however it ends, so a lock is never taken over from a live owner (a hung or
// stopped one included) and two waiters can never both own a source. The owner record is
// the lock itself: the kernel lists the holder's pid (/proc/locks), read for messages only.
// Lock files are never removed: a waiter holding an open handle on a removed file would lock
// a file nobody else sees. A waiter that gets the lock after its owner died resumes the
// owner's partial file (same path, same journal). An owner that fails (an error, a digest
// other than its pin, a cancel) says so in `locks/source-<hash>.failed.json` before it lets
// the lock go, so the waiter that takes the lock next can tell a failure from a death: an
// exited process is not a dead one.
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, CacheError } from '../core/errors.js';
import { loadSqlite, lockHolderPid, tryLockFile, type FileLock, type SqliteClass } from '../core/file-lock.js';
import { isProcessAlive } from '../core/processes.js';
import type { CacheLayout } from './cache-root.js';

export interface HeldLock {
  release(): Promise<void>;
  /**
   * Records why this owner gives up (before `release`), for the process that takes the lock
   * next. Best effort: without the record that process says the owner is gone.
   */
  recordFailure(message: string): void;
  /**
   * Aborts when the lock is lost. A kernel lock is only lost with its process, so this never
   * fires; it stays for callers written against lock files that could be taken over.
   */
  lost: AbortSignal;
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** Called once when another process is found downloading the source. */
  onWait?: () => void;
  /** Called when the lock comes free because the process holding it died. */
  onOwnerGone?: (pid: number) => void;
  /** Called when the lock comes free because the process holding it failed, with its reason. */
  onOwnerFailed?: (pid: number, message: string) => void;
  /**
   * Polled while waiting, and once more when the lock is taken (waited for or not: the owner
   * may have finished between the caller's look and its first try): true when another process
   * has finished the work.
   */
  isDone: () => Promise<boolean>;
  pollMs?: number;
}

export function keyHash(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 32);
}

export function sourceLockPath(layout: CacheLayout, hash: string): string {
  return `${layout.locks}/source-${hash}.lock`;
}

/** Where an owner that failed leaves its reason for the next one. */
export function sourceFailurePath(layout: CacheLayout, hash: string): string {
  return `${layout.locks}/source-${hash}.failed.json`;
}

interface FailureRecord {
  pid: number;
  message: string;
}

/** A record is a few hundred bytes: anything larger is not one. */
const FAILURE_RECORD_MAX_BYTES = 64 * 1024;

/**
 * The record if `path` is one: a regular file, opened without following a symlink and
 * without blocking (a FIFO planted there would hang the owner while it holds the lock).
 */
function readFailure(path: string): FailureRecord | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile() || stats.size > FAILURE_RECORD_MAX_BYTES) return undefined;
    const buffer = Buffer.alloc(stats.size);
    const read = readSync(fd, buffer, 0, stats.size, 0);
    const value = JSON.parse(buffer.subarray(0, read).toString('utf8')) as Partial<FailureRecord> | null;
    return value && Number.isSafeInteger(value.pid) && typeof value.message === 'string'
      ? { pid: value.pid!, message: value.message }
      : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Removes the last owner's record: best effort, like writing it (a directory there stays, unread). */
function removeFailure(path: string): void {
  try {
    rmSync(path, { force: true });
  } catch {
    /* not a file: never read as a record, and a new one cannot replace it */
  }
}

function writeFailure(path: string, record: FailureRecord): void {
  const temp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temp, JSON.stringify(record));
    renameSync(temp, path);
  } catch {
    rmSync(temp, { force: true });
  }
}

/**
 * Tries once to take the kernel lock on `path` (src/core/file-lock.ts). Returns the lock, or
 * undefined when another process (or connection) holds it.
 */
function tryLock(DatabaseClass: SqliteClass, path: string): FileLock | undefined {
  try {
    return tryLockFile(DatabaseClass, path);
  } catch (err) {
    throw new CacheError(`cannot lock ${path}: ${(err as Error).message}`, { cause: err, path });
  }
}

/** Alive and not a zombie: a killed process releases its locks before its parent reaps it. */
function isRunning(pid: number): boolean {
  if (!isProcessAlive(pid)) return false;
  try {
    // "pid (comm) S ...": the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/**
 * Takes the lock of the source whose key hashes to `hash` if it exists and nobody holds it
 * (for gc, which removes an abandoned partial only while holding its lock).
 */
export async function takeFreeSourceLock(
  layout: CacheLayout,
  hash: string,
): Promise<(() => void) | 'held' | 'no-lock'> {
  const path = sourceLockPath(layout, hash);
  if (!statSync(path, { throwIfNoEntry: false })) return 'no-lock';
  const lock = tryLock(await loadSqlite(), path);
  return lock ? () => lock.release() : 'held';
}

/**
 * Holds the lock named by a planned download's id (`locks/source-<id>.lock`) while it writes
 * `tmp/<id>.part` and `tmp/<id>.pieces.json`: gc removes those only when the lock is free
 * (their process gone, however it ended), and two processes of this node that plan the
 * same id (two URLs of one blob) take turns instead of writing one part. Resolves to the release.
 */
export async function holdPartialLock(layout: CacheLayout, id: string, signal?: AbortSignal): Promise<() => void> {
  const DatabaseClass = await loadSqlite();
  const path = sourceLockPath(layout, id);
  for (;;) {
    if (signal?.aborted) throw new AbortedError('cancelled while waiting for another download');
    const lock = tryLock(DatabaseClass, path);
    if (lock) return () => lock.release();
    await sleep(200);
  }
}

/** True when some process holds the lock of some source: a download is running on this node. */
export async function anySourceLockHeld(layout: CacheLayout): Promise<boolean> {
  const DatabaseClass = await loadSqlite();
  let names: string[];
  try {
    names = readdirSync(layout.locks);
  } catch {
    return false;
  }
  for (const name of names) {
    if (!/^source-[0-9a-f]+\.lock$/.test(name)) continue;
    const lock = tryLock(DatabaseClass, `${layout.locks}/${name}`);
    if (!lock) return true;
    lock.release();
  }
  return false;
}

/** Takes the source's lock, or returns 'done' if another process finished it meanwhile. */
export async function acquireSourceLock(
  layout: CacheLayout,
  key: string,
  options: WaitOptions,
): Promise<HeldLock | 'done'> {
  const DatabaseClass = await loadSqlite();
  const hash = keyHash(key);
  const path = sourceLockPath(layout, hash);
  const failurePath = sourceFailurePath(layout, hash);
  let announced = false;
  let holder: number | undefined;
  for (;;) {
    if (options.signal?.aborted) throw new AbortedError('cancelled while waiting for another download');
    const lock = tryLock(DatabaseClass, path);
    if (lock) {
      if (await options.isDone().catch(() => false)) {
        lock.release();
        return 'done';
      }
      // Written by the last owner, if it failed: every owner removes the record it finds.
      const failure = readFailure(failurePath);
      removeFailure(failurePath);
      if (announced && failure && (holder === undefined || failure.pid === holder)) {
        options.onOwnerFailed?.(failure.pid, failure.message);
      } else if (holder !== undefined && !isRunning(holder)) {
        options.onOwnerGone?.(holder);
      }
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          lock.release();
        },
        recordFailure: (message) => {
          if (!released) writeFailure(failurePath, { pid: process.pid, message });
        },
        lost: new AbortController().signal,
      };
    }
    holder = lockHolderPid(path) ?? holder;
    if (await options.isDone()) return 'done';
    if (!announced) {
      announced = true;
      options.onWait?.();
    }
    await sleep(options.pollMs ?? 200);
  }
}
