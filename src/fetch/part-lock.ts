// One download at a time per part file. Two runs to the same output would write the same
// `<out>.part`, and the first to finish would rename the other's incomplete bytes into
// place; `<out>.part.lock` keeps them apart, so a second run fails at once with
// LOOM_ERR_OUTPUT_BUSY.
// The lock is the kernel's (a POSIX record lock, core/file-lock.ts): it is released when its
// process dies, however it dies, and never taken from a live one. An owner pid written in
// the file and checked with kill(pid, 0) was wrong both ways in containers: a run in another
// pid namespace (a second container of the pod, sharing the volume) saw a live owner as dead
// and took its part over, and a restarted container's run, pid 1 again, saw the dead run's
// "pid 1" as alive and was refused for ever.
// The lock file is removed by its holder before it lets the lock go, so nothing is left
// beside the output. A run that was waiting on the removed file gets its lock, but on a file
// no longer at that path: after locking, it checks that the kernel lists this process as the
// holder of the file now at the path, and else starts again.
import { closeSync, existsSync, openSync, statSync, unlinkSync } from 'node:fs';
import { readFile, stat, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { DiskAccessError, OutputBusyError, diskError } from '../core/errors.js';
import { loadSqlite, lockHolderPid, tryLockFile, type FileLock } from '../core/file-lock.js';
import { isProcessAlive } from '../core/processes.js';

export function partLockPathFor(partPath: string): string {
  return `${partPath}.lock`;
}

/** Takes the part file's lock; resolves to its release. */
export async function lockPart(partPath: string): Promise<() => Promise<void>> {
  const path = partLockPathFor(partPath);
  const Sqlite = await loadSqlite();
  for (let attempt = 0; ; attempt++) {
    await ensureLockFile(path, partPath);
    let lock: FileLock | undefined;
    try {
      lock = tryLockFile(Sqlite, path);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'SQLITE_NOTADB' && attempt < 3) {
        await clearOldLock(path, partPath);
        continue;
      }
      throw diskError(err, `locking ${partPath}`, path);
    }
    if (!lock) throw busy(partPath, lockHolderPid(path));
    if (isOurs(path)) {
      const held = lock;
      return () => {
        // Removed while still held: a run that locks the removed file sees it is not the
        // one at the path, and starts again.
        try {
          unlinkSync(path);
        } catch {
          /* gone already */
        }
        held.release();
        return Promise.resolve();
      };
    }
    lock.release();
    if (attempt >= 5) throw busy(partPath, lockHolderPid(path));
  }
}

/** Whether the file now at `path` is the one this process holds the lock on. */
function isOurs(path: string): boolean {
  if (!statSync(path, { throwIfNoEntry: false })) return false;
  const holder = lockHolderPid(path);
  // No /proc/locks (not Linux): the file is trusted to be the one locked.
  return holder === undefined || holder === process.pid;
}

function busy(partPath: string, pid: number | undefined): OutputBusyError {
  return new OutputBusyError(
    `${partPath} is being written by another download${pid ? ` (pid ${pid} on ${hostname()})` : ''}`,
    { path: partPath, hint: 'wait for it to finish, or choose another output path' },
  );
}

/**
 * Creates the empty lock file if it is missing, so that a folder that refuses it gives the
 * file system's own error (full, read-only, /proc) rather than SQLite's "cannot open". Only
 * when missing, and synchronously: opening and closing a descriptor of a file this process
 * holds a lock on would drop that lock.
 */
async function ensureLockFile(path: string, partPath: string): Promise<void> {
  if (existsSync(path)) return;
  try {
    closeSync(openSync(path, 'a'));
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT' && (await isDirectory(dirname(path))))
      // The folder is there and takes no new file (/proc, sysfs): "does not exist" would mislead.
      throw new DiskAccessError(`cannot create files in ${dirname(path)} while locking ${partPath}`, {
        path,
        cause: err,
        hint: 'that folder exists but its file system takes no new files (a virtual one, such as /proc?); choose another output path',
      });
    throw diskError(err, `locking ${partPath}`, path);
  }
}

/**
 * A lock file of an older Loom (JSON naming its owner, not a lock the kernel keeps): removed
 * unless its owner still runs on this host.
 */
async function clearOldLock(path: string, partPath: string): Promise<void> {
  let owner: { pid?: unknown; host?: unknown } | undefined;
  try {
    owner = JSON.parse(await readFile(path, 'utf8')) as { pid?: unknown; host?: unknown };
  } catch {
    owner = undefined;
  }
  if (owner && typeof owner.pid === 'number' && owner.host === hostname() && isProcessAlive(owner.pid))
    throw busy(partPath, owner.pid);
  await rm(path, { force: true });
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isDirectory(),
    () => false,
  );
}
