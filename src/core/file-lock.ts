// Locks the kernel releases when their process ends, however it ends (kill -9 included), for
// Node, which has no flock: a POSIX record lock (fcntl) taken through SQLite, `BEGIN
// EXCLUSIVE` on a file used for nothing else. A lock is therefore never left behind by a dead
// owner nor taken from a live one (a hung or stopped one included). The kernel lists the
// holder's pid (/proc/locks), read for messages only. Two rules for callers: never open a
// lock file any other way (closing any descriptor of a file drops every POSIX lock this
// process holds on it; SQLite keeps its own descriptors in step), and never remove one (a
// process holding an open handle on a removed file would lock a file nobody else sees).
// Within one process, SQLite keeps the locks of its connections apart: a second connection
// finds the file held too.
import { readFileSync, statSync } from 'node:fs';
import type Database from 'better-sqlite3';

export type SqliteClass = typeof Database;

/** A lock taken by `tryLockFile`; `release` is idempotent. */
export interface FileLock {
  release(): void;
}

let sqliteClass: SqliteClass | undefined;

/** better-sqlite3, loaded on first use (a cache hit never loads the native module). */
export async function loadSqlite(): Promise<SqliteClass> {
  sqliteClass ??= (await import('better-sqlite3')).default;
  return sqliteClass;
}

/**
 * Tries once to take the lock on `path` (creating the empty file if needed). Returns the
 * lock, or undefined when another process (or connection) holds it. Throws the driver's
 * error when the file cannot be opened or locked at all: callers say what it was for.
 */
export function tryLockFile(DatabaseClass: SqliteClass, path: string): FileLock | undefined {
  const db = new DatabaseClass(path, { timeout: 0 });
  try {
    // An empty file is an empty database: EXCLUSIVE takes the write lock, and with the
    // journal in memory nothing is written (a lock can be taken on a full disk).
    db.pragma('journal_mode = MEMORY');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') return undefined;
    throw err;
  }
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      try {
        db.exec('ROLLBACK');
      } catch {
        /* nothing was written */
      }
      db.close();
    },
  };
}

/** The pid holding a POSIX lock on `path`, as the kernel lists it (Linux), if any. */
export function lockHolderPid(path: string): number | undefined {
  try {
    const ino = statSync(path).ino;
    for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
      const fields = line.trim().split(/\s+/);
      // "1: POSIX  ADVISORY  WRITE 3785 fe:00:1474579 1073741824 1073742335"
      if (fields[1] !== 'POSIX' || !fields[5]?.endsWith(`:${ino}`)) continue;
      const pid = Number(fields[4]);
      if (Number.isSafeInteger(pid) && pid > 0) return pid;
    }
  } catch {
    /* no /proc/locks (not Linux), or no lock file: the pid is only for messages */
  }
  return undefined;
}
