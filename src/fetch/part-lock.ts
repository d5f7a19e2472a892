// One download at a time per part file. Two runs to the same output would write the same
// `<out>.part`, and the first to finish would rename the other's incomplete bytes into
// place; the lock file beside the part names its owner's pid, so a second run fails at once
// with the owner's pid, and a lock left by a killed run (its pid gone) is taken over.
// The lock file appears whole: its owner is written to a file of this process's own and
// hard-linked to the lock's name (which fails if the name exists). Creating it empty and
// writing the owner after let a second run started at the same moment read an empty lock,
// take it for a killed run's and remove it, and both runs then wrote the same part.
// A killed run's lock is taken over by moving it aside under a name of this process's own,
// then checking that the file moved is the one judged abandoned (same inode): a run that
// took it over first and made its own lock meanwhile gets it back.
// File systems without hard links (vfat, exFAT, many FUSE mounts such as gcsfuse) get the
// lock created exclusively in place and the owner written after: the narrow race above
// comes back there, a download does not fail.
import { hostname } from 'node:os';
import { link, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DiskAccessError, OutputBusyError, diskError } from '../core/errors.js';
import { isProcessAlive } from '../core/processes.js';

export function partLockPathFor(partPath: string): string {
  return `${partPath}.lock`;
}

/** Takes the part file's lock; resolves to its release. */
export async function lockPart(partPath: string): Promise<() => Promise<void>> {
  const path = partLockPathFor(partPath);
  const mine = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  const owner = JSON.stringify({ pid: process.pid, host: hostname() });
  try {
    await writeFile(mine, owner);
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
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await linkOrCreate(mine, path, owner);
        return () => rm(path, { force: true });
      } catch (err) {
        if ((err as { code?: string }).code !== 'EEXIST' || attempt >= 2)
          throw diskError(err, `locking ${partPath}`, path);
      }
      const held = await stat(path).catch(() => undefined);
      if (!held) continue;
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
      // The owner is gone (or the lock is not one Loom wrote): a killed run left it behind.
      await takeAside(path, held.ino, `${mine}.stale`);
    }
  } finally {
    await rm(mine, { force: true });
  }
}

const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK']);

/** Hard-links `mine` to `path`; where the file system has no hard links, creates `path` exclusively. */
async function linkOrCreate(mine: string, path: string, owner: string): Promise<void> {
  try {
    await link(mine, path);
  } catch (err) {
    if (!NO_HARD_LINKS.has((err as { code?: string }).code ?? '')) throw err;
    const handle = await open(path, 'wx');
    try {
      await handle.writeFile(owner);
    } finally {
      await handle.close();
    }
  }
}

/** Removes the lock at `path` if it is still inode `ino`; puts back one made since by another run. */
async function takeAside(path: string, ino: number, aside: string): Promise<void> {
  try {
    await rename(path, aside);
  } catch {
    return; // Gone already: another run took it over.
  }
  const moved = await stat(aside).catch(() => undefined);
  if (moved && moved.ino !== ino) await link(aside, path).catch(() => undefined);
  await rm(aside, { force: true });
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
