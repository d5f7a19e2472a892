// The blob files: moving a verified download in, and putting a blob at an output path by
// hard link (instant, whatever the size), else a copy-on-write clone, else a plain copy.
// Blobs are read-only: a hard-linked output shares the blob's inode, so writing to it
// would change the cached bytes for every later user.
import { constants, createReadStream } from 'node:fs';
import { chmod, copyFile, link, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import lockfile from 'proper-lockfile';
import { CacheError, diskError } from '../core/errors.js';
import { blobPath, type CacheLayout } from './cache-root.js';

/** How a blob reached the output path. */
export type Materialization = 'hardlink' | 'reflink' | 'copy';

export async function ensureLayout(layout: CacheLayout): Promise<void> {
  try {
    // The root first, on its own: a recursive mkdir reports a read-only parent as ENOENT.
    await mkdir(layout.root).catch((err: { code?: string }) => {
      if (err.code === 'ENOENT') return mkdir(layout.root, { recursive: true });
      if (err.code !== 'EEXIST') throw err;
      return undefined;
    });
    for (const dir of [layout.blobs, layout.tmp, layout.locks]) await mkdir(dir, { recursive: true });
  } catch (err) {
    const cause = diskError(err, `creating the cache in ${layout.root}`);
    throw new CacheError(`cache ${layout.root} is not usable: ${cause.message}`, { path: layout.root, cause: err });
  }
}

export async function hasBlob(layout: CacheLayout, digest: string): Promise<boolean> {
  try {
    return (await stat(blobPath(layout, digest))).isFile();
  } catch {
    return false;
  }
}

/** Moves a finished, hashed download into the store (read-only), or drops it if the blob exists. */
export async function adoptBlob(layout: CacheLayout, partPath: string, digest: string): Promise<string> {
  const target = blobPath(layout, digest);
  try {
    await chmod(partPath, 0o444);
    if (await hasBlob(layout, digest)) await rm(partPath, { force: true });
    else await rename(partPath, target);
    return target;
  } catch (err) {
    throw diskError(err, `storing blob ${digest}`);
  }
}

/** Puts the blob at `out`, replacing whatever was there atomically. */
export async function materialize(layout: CacheLayout, digest: string, out: string): Promise<Materialization> {
  const source = blobPath(layout, digest);
  const temp = `${out}.loom-${process.pid}-${Date.now()}`;
  try {
    const existing = await stat(out).catch(() => undefined);
    const blob = await stat(source);
    if (existing && existing.ino === blob.ino && existing.dev === blob.dev) return 'hardlink';
    let method: Materialization;
    try {
      await link(source, temp);
      method = 'hardlink';
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw err;
      method = await cloneOrCopy(source, temp);
    }
    await rename(temp, out);
    return method;
  } catch (err) {
    await rm(temp, { force: true });
    throw diskError(err, `placing the cached file at ${out}`);
  }
}

async function cloneOrCopy(source: string, target: string): Promise<Materialization> {
  try {
    await copyFile(source, target, constants.COPYFILE_FICLONE_FORCE);
    return 'reflink';
  } catch {
    await copyFile(source, target);
    // A copy is a file of its own: it may be writable like any download.
    await chmod(target, 0o644);
    return 'copy';
  }
}

export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function blobLockPath(layout: CacheLayout, digest: string): string {
  return `${layout.locks}/blob-${digest}.lock`;
}

/**
 * Marks a blob in use while `fn` runs (being linked, copied or served), so that gc leaves it
 * alone. Readers do not exclude each other: each takes its own marker.
 */
export async function withBlobInUse<T>(layout: CacheLayout, digest: string, fn: () => Promise<T>): Promise<T> {
  const marker = `${blobLockPath(layout, digest)}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  await mkdir(dirname(marker), { recursive: true });
  const release = await lockfile.lock(marker, {
    realpath: false,
    stale: 10_000,
    update: 2_000,
    onCompromised: () => undefined,
  });
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}

/** True when some process holds an in-use marker for the blob that is not stale. */
export async function blobInUse(layout: CacheLayout, digest: string): Promise<boolean> {
  const prefix = `blob-${digest}.lock.`;
  const entries = await readdir(layout.locks).catch(() => [] as string[]);
  for (const entry of entries) {
    if (!entry.startsWith(prefix) || !entry.endsWith('.lock')) continue;
    const markerFile = `${layout.locks}/${entry.slice(0, -'.lock'.length)}`;
    if (await lockfile.check(markerFile, { realpath: false, stale: 10_000 }).catch(() => false)) return true;
  }
  return false;
}
