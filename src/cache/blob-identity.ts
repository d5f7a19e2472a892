// What identifies a blob file on disk beyond its name and size: inode, size, mtime and
// ctime, recorded when the blob is adopted (index row and hit hint) and compared on the stat
// a hit already makes. Mode 0444 does not stop root, and a hard-linked output shares the
// blob's inode: a write through it changes mtime and ctime, and putting the mtime back
// changes the ctime. Loom's own hard links change the ctime too, so the one who links
// records the stamp it leaves; and so does deleting an output (a hard link to the blob), so
// a ctime that moved with the link count, mtime unchanged, is a link added or removed, not
// a write: without that, every hit after \`rm model.gguf\` rehashed the whole blob.
import type { Stats } from 'node:fs';
import { statSync } from 'node:fs';
import { blobPath, type CacheLayout } from './cache-root.js';

export interface BlobStamp {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  /** Hard links to the inode; absent in stamps recorded before it was kept. */
  nlink?: number;
}

export function stampOf(stats: Stats): BlobStamp {
  return { ino: stats.ino, size: stats.size, mtimeMs: stats.mtimeMs, ctimeMs: stats.ctimeMs, nlink: stats.nlink };
}

export function sameStamp(a: BlobStamp | undefined, b: BlobStamp | undefined): boolean {
  return (
    a !== undefined &&
    b !== undefined &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeMs === b.mtimeMs &&
    (a.ctimeMs === b.ctimeMs || linksChanged(a, b))
  );
}

/** The link count differs (both known): a ctime that moved with it is a link made or removed. */
function linksChanged(a: BlobStamp, b: BlobStamp): boolean {
  return a.nlink !== undefined && b.nlink !== undefined && a.nlink !== b.nlink;
}

export function isBlobStamp(value: unknown): value is BlobStamp {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    Number.isSafeInteger(v.ino) &&
    Number.isSafeInteger(v.size) &&
    typeof v.mtimeMs === 'number' &&
    typeof v.ctimeMs === 'number' &&
    (v.nlink === undefined || Number.isSafeInteger(v.nlink))
  );
}

/** The blob file's stamp now, or undefined when it is not a regular file. */
export function currentStamp(layout: CacheLayout, digest: string): BlobStamp | undefined {
  const stats = statSync(blobPath(layout, digest), { throwIfNoEntry: false });
  return stats?.isFile() ? stampOf(stats) : undefined;
}
