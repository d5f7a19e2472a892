// One download at a time per part file. Two runs to the same output would write the same
// `<out>.part`, and the first to finish would rename the other's incomplete bytes into
// place; the lock file beside the part names its owner's pid, so a second run fails at once
// with the owner's pid, and a lock left by a killed run (its pid gone) is taken over.
import { hostname } from 'node:os';
import { open, readFile, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DiskAccessError, OutputBusyError, diskError } from '../core/errors.js';
import { isProcessAlive } from '../core/processes.js';

export function partLockPathFor(partPath: string): string {
  return `${partPath}.lock`;
}

/** Takes the part file's lock; resolves to its release. */
export async function lockPart(partPath: string): Promise<() => Promise<void>> {
  const path = partLockPathFor(partPath);
  const owner = JSON.stringify({ pid: process.pid, host: hostname() });
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(path, 'wx');
      try {
        await handle.writeFile(owner);
      } finally {
        await handle.close();
      }
      return () => rm(path, { force: true });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ENOENT' && (await isDirectory(dirname(path))))
        // The folder is there and takes no new file (/proc, sysfs): "does not exist" would mislead.
        throw new DiskAccessError(`cannot create files in ${dirname(path)} while locking ${partPath}`, {
          path,
          cause: err,
          hint: 'that folder exists but its file system takes no new files (a virtual one, such as /proc?); choose another output path',
        });
      if (code !== 'EEXIST' || attempt >= 2) throw diskError(err, `locking ${partPath}`, path);
    }
    const holder = await readOwner(path);
    if (holder && (holder.host !== hostname() || isProcessAlive(holder.pid))) {
      throw new OutputBusyError(
        `${partPath} is being written by another download (pid ${holder.pid} on ${holder.host})`,
        {
          path: partPath,
          hint: 'wait for it to finish, or choose another output path',
        },
      );
    }
    // The owner is gone (or the lock is unreadable): a killed run left it behind.
    await rm(path, { force: true });
  }
}

async function readOwner(path: string): Promise<{ pid: number; host: string } | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as { pid?: unknown; host?: unknown };
    return typeof parsed.pid === 'number' && typeof parsed.host === 'string'
      ? { pid: parsed.pid, host: parsed.host }
      : undefined;
  } catch {
    return undefined;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isDirectory(),
    () => false,
  );
}
