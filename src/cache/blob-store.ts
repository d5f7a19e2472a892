// The blob files: moving a verified download in, and putting a blob at an output path by
// hard link (instant, whatever the size), else a copy-on-write clone, else a plain copy.
// A copy Loom placed on another file system and that is unchanged since is kept (copy-stamps.ts).
// Blobs are read-only: a hard-linked output shares the blob's inode, so writing to it
// would change the cached bytes for every later user.
// Placing a blob by link uses synchronous calls: a handful of metadata syscalls that take
// microseconds, where a trip through the thread pool each (and loading fs/promises) added
// milliseconds to a cache hit.
import {
  constants,
  createReadStream,
  linkSync,
  promises as fsp,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import { dirname } from 'node:path';
import { CacheError, diskError } from '../core/errors.js';
import { isProcessAlive } from '../core/processes.js';
import { blobPath, checkCacheRootFolder, madeFolders, type CacheLayout } from './cache-root.js';
import { recordCopy, unchangedCopy } from './copy-stamps.js';

/** How a blob reached the output path. */
export type Materialization = 'hardlink' | 'reflink' | 'copy';

export async function ensureLayout(layout: CacheLayout): Promise<void> {
  checkCacheRootFolder(layout.root);
  try {
    // The root first, on its own: a recursive mkdir reports a read-only parent as ENOENT.
    await fsp.mkdir(layout.root).catch((err: { code?: string }) => {
      if (err.code === 'ENOENT') return fsp.mkdir(layout.root, { recursive: true });
      if (err.code !== 'EEXIST') throw err;
      return undefined;
    });
    for (const dir of madeFolders(layout)) await fsp.mkdir(dir, { recursive: true });
  } catch (err) {
    const denied = permissionHint(err);
    if (denied)
      throw new CacheError(`cache ${layout.root} is not usable: permission denied while creating the cache in it`, {
        path: layout.root,
        cause: err,
        hint: denied,
      });
    const cause = diskError(err, `creating the cache in ${layout.root}`);
    throw new CacheError(`cache ${layout.root} is not usable: ${cause.message}`, { path: layout.root, cause: err });
  }
}

/**
 * For a mkdir refused for permissions: who this process is, who owns the folder it could not
 * write into, and what to do. A container image that runs as a user (`USER node`) on a
 * hostPath the kubelet created root-owned crash-looped on "permission denied" alone.
 */
function permissionHint(err: unknown): string | undefined {
  const { code, path } = err as { code?: string; path?: string };
  if ((code !== 'EACCES' && code !== 'EPERM') || !path || !process.getuid || !process.getgid) return undefined;
  const folder = dirname(path);
  const uid = process.getuid();
  const gid = process.getgid();
  const owner = statSync(folder, { throwIfNoEntry: false });
  const owned = owner
    ? `, owned by uid ${owner.uid} gid ${owner.gid} with mode ${(owner.mode & 0o7777).toString(8).padStart(4, '0')}`
    : '';
  return (
    `this process runs as uid ${uid} gid ${gid} and cannot write into ${folder}${owned}: ` +
    `make it writable for uid ${uid} (\`chown ${uid}:${gid} ${folder}\`; on Kubernetes, an initContainer running as root ` +
    `that does it, as deploy/kubernetes/agent-daemonset.yaml shows), or run as a user that can write there`
  );
}

export async function hasBlob(layout: CacheLayout, digest: string): Promise<boolean> {
  try {
    return (await fsp.stat(blobPath(layout, digest))).isFile();
  } catch {
    return false;
  }
}

/**
 * Moves a finished, hashed download into the store (read-only). It replaces a blob already
 * there: the new file's bytes were hashed as they were written, the old file's may have been
 * changed since (outputs hard-linked to it keep the old inode).
 */
export async function adoptBlob(layout: CacheLayout, partPath: string, digest: string): Promise<string> {
  const target = blobPath(layout, digest);
  try {
    await fsp.chmod(partPath, 0o444);
    await fsp.rename(partPath, target);
    return target;
  } catch (err) {
    throw diskError(err, `storing blob ${digest}`);
  }
}

/**
 * Puts the blob at `out`, replacing whatever was there atomically. A new hard link changes
 * the blob's ctime: `onLinked` gets the blob's stat after it, so the caller can record the
 * stamp it left (blob-identity.ts) when the blob was as recorded before.
 */
export async function materialize(
  layout: CacheLayout,
  digest: string,
  out: string,
  onLinked?: (before: Stats, after: Stats) => void,
): Promise<Materialization> {
  const source = blobPath(layout, digest);
  const temp = `${out}.loom-${process.pid}-${Date.now()}`;
  try {
    const existing = statSync(out, { throwIfNoEntry: false });
    const blob = statSync(source);
    if (existing && existing.ino === blob.ino && existing.dev === blob.dev) return 'hardlink';
    // A copy (another file system, or a link refused), placed by Loom and unchanged since: kept.
    const kept = existing ? unchangedCopy(layout, digest, out, existing) : undefined;
    if (kept) return kept;
    let method: Materialization;
    try {
      linkSync(source, temp);
      method = 'hardlink';
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw err;
      method = await cloneOrCopy(source, temp);
    }
    renameSync(temp, out);
    // Gone unless another process placed the same blob at `out` between the look above and the
    // rename: renaming a link over a link to the same file does nothing (POSIX), leaving it.
    // Removed before the stat below, as it changes the blob's ctime.
    rmSync(temp, { force: true });
    if (method !== 'hardlink') recordCopy(layout, digest, out, method);
    // After the rename, which changes the ctime of the inode it moves as well.
    if (method === 'hardlink' && onLinked) {
      const after = statSync(source, { throwIfNoEntry: false });
      if (after) onLinked(blob, after);
    }
    return method;
  } catch (err) {
    rmSync(temp, { force: true });
    throw diskError(err, `placing the cached file at ${out}`);
  }
}

async function cloneOrCopy(source: string, target: string): Promise<Materialization> {
  try {
    await fsp.copyFile(source, target, constants.COPYFILE_FICLONE_FORCE);
    return 'reflink';
  } catch {
    await fsp.copyFile(source, target);
    // A copy is a file of its own: it may be writable like any download.
    await fsp.chmod(target, 0o644);
    return 'copy';
  }
}

export async function sha256OfFile(path: string): Promise<string> {
  const { createHash } = await import('node:crypto');
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function inUsePrefix(digest: string): string {
  return `blob-${digest}.in-use.`;
}

/**
 * Marks a blob in use while `fn` runs (being linked, copied or served), so that gc and rm
 * leave it alone: a marker file named with this process's pid, which gc disregards once
 * that process is gone (so a kill -9 cannot pin a blob forever).
 */
export async function withBlobInUse<T>(layout: CacheLayout, digest: string, fn: () => Promise<T>): Promise<T> {
  const marker = `${layout.locks}/${inUsePrefix(digest)}${process.pid}.${Math.random().toString(36).slice(2)}`;
  writeFileSync(marker, '');
  try {
    return await fn();
  } finally {
    rmSync(marker, { force: true });
  }
}

/** True when a live process holds an in-use marker for the blob. */
export async function blobInUse(layout: CacheLayout, digest: string): Promise<boolean> {
  const prefix = inUsePrefix(digest);
  const entries = await fsp.readdir(layout.locks).catch(() => [] as string[]);
  for (const entry of entries) {
    if (!entry.startsWith(prefix)) continue;
    const pid = Number(entry.slice(prefix.length).split('.')[0]);
    if (isProcessAlive(pid)) return true;
    await fsp.rm(`${layout.locks}/${entry}`, { force: true });
  }
  return false;
}
