// What the node cache knows of the copies it placed: an output on another file system than
// the cache (a tmpfs, another disk) cannot be a hard link, so it is a file of its own, and
// without a record a copy already in place could not be told from a file changed since
// without reading it: every second pull copied every file again. Each copy's stamp (device,
// inode, size, mtime, ctime, as blob-identity.ts records for blobs) is kept in
// `copies/<hash of its path>.json` once it is renamed into place; a later placement of the
// same blob at the same path that finds the stamp unchanged leaves the copy as it is. A
// write through the copy changes its mtime, and putting the mtime back changes its ctime:
// such a copy no longer matches, and is replaced. Records are best effort: without one, the
// blob is copied again, as before.
import { createHash } from 'node:crypto';
import {
  mkdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { isBlobStamp, stampOf, type BlobStamp } from './blob-identity.js';
import type { CacheLayout } from './cache-root.js';

/** How a copy was made: what a placement that keeps it reports. */
export type CopyMethod = 'reflink' | 'copy';

interface CopyRecord {
  path: string;
  digest: string;
  method: CopyMethod;
  dev: number;
  stamp: BlobStamp;
}

/**
 * Where `out` is, from the root, as the kernel finds it: its folder's real path and its name.
 * Not resolve(out): `-o link/../out/x.bin` is written where `link` leads, and resolve() names
 * another file (or none), which gc then judges gone and removes the record of.
 */
function copyPath(out: string): string {
  try {
    return join(realpathSync.native(dirname(out)), basename(out));
  } catch {
    return resolve(out);
  }
}

function recordPath(layout: CacheLayout, out: string): string {
  const hash = createHash('sha256').update(copyPath(out)).digest('hex').slice(0, 32);
  return join(layout.copies, `${hash}.json`);
}

function readRecord(path: string): CopyRecord | undefined {
  try {
    const value = JSON.parse(readFileSync(path, 'utf8')) as Partial<CopyRecord> | null;
    if (!value || typeof value.path !== 'string' || typeof value.digest !== 'string') return undefined;
    if ((value.method !== 'copy' && value.method !== 'reflink') || !Number.isSafeInteger(value.dev)) return undefined;
    return isBlobStamp(value.stamp) ? (value as CopyRecord) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The method of the copy of `digest` at `out` when `existing` (its stat now) is that copy,
 * unchanged since Loom placed it; undefined otherwise. Compared strictly, ctime included:
 * unlike a blob, a copy gains no links from Loom.
 */
export function unchangedCopy(
  layout: CacheLayout,
  digest: string,
  out: string,
  existing: Stats,
): CopyMethod | undefined {
  const record = readRecord(recordPath(layout, out));
  if (!record || record.digest !== digest || record.path !== copyPath(out)) return undefined;
  return unchangedRecord(record, existing);
}

function unchangedRecord(record: CopyRecord, existing: Stats): CopyMethod | undefined {
  if (!existing.isFile() || record.dev !== existing.dev) return undefined;
  const now = stampOf(existing);
  const then = record.stamp;
  const same =
    now.ino === then.ino && now.size === then.size && now.mtimeMs === then.mtimeMs && now.ctimeMs === then.ctimeMs;
  return same ? record.method : undefined;
}

/**
 * Whether the record at `path` (in copies/) no longer describes a file: the copy is gone,
 * replaced or changed (a placement would copy again), or the record is unreadable. For gc,
 * which removes such records.
 */
export function copyRecordStale(path: string): boolean {
  const record = readRecord(path);
  if (!record) return true;
  const stats = statSync(record.path, { throwIfNoEntry: false });
  return !stats || unchangedRecord(record, stats) === undefined;
}

/** Records the copy of `digest` just renamed to `out`. */
export function recordCopy(layout: CacheLayout, digest: string, out: string, method: CopyMethod): void {
  const path = recordPath(layout, out);
  const temp = `${path}.${process.pid}.tmp`;
  try {
    const stats = statSync(out);
    const record: CopyRecord = { path: copyPath(out), digest, method, dev: stats.dev, stamp: stampOf(stats) };
    mkdirSync(layout.copies, { recursive: true });
    writeFileSync(temp, JSON.stringify(record));
    renameSync(temp, path);
  } catch {
    // Only saves the next placement a copy: a full or read-only cache must not fail this one.
    rmSync(temp, { force: true });
  }
}
