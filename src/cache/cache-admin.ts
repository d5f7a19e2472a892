// `loom cache` operations on a cache root: list, verify, garbage-collect and remove. Opening
// the cache folds the uses recorded in hit hints into the index first, so that LRU order
// counts hits served without SQLite. The cache's size counts everything it holds on disk:
// indexed blobs, blobs without an index row (a record lost to a full disk or a crash),
// partial downloads in tmp/ and leftovers (a kill -9 between writing a temp file and
// renaming it, a pieces record whose part is gone). gc collects all but the indexed blobs
// whatever the size asked for, once no process owns them (they are reachable from nowhere
// and may hold a full disk), then the LRU blobs down to the size.
import { readdirSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { CacheError, NotFoundError } from '../core/errors.js';
import { blobInUse, ensureLayout, sha256OfFile } from './blob-store.js';
import { CacheIndex, type BlobEntry } from './cache-index.js';
import { blobPath, cacheLayout, type CacheLayout } from './cache-root.js';
import { copyRecordStale } from './copy-stamps.js';
import { sourceKey, sourceKeyOf } from './source-key.js';

export interface CacheHandle {
  layout: CacheLayout;
  index: CacheIndex;
  close(): void;
}

export async function openCache(root: string): Promise<CacheHandle> {
  const layout = cacheLayout(root);
  await ensureLayout(layout);
  const index = new CacheIndex(layout);
  try {
    index.foldHintUses();
  } catch (err) {
    index.close();
    throw err;
  }
  return { layout, index, close: () => index.close() };
}

/** Deletes a blob's file and its index rows (with their hints). */
async function dropBlob(cache: CacheHandle, blob: BlobEntry): Promise<void> {
  await rm(blobPath(cache.layout, blob.digest), { force: true });
  cache.index.removeBlob(blob.digest);
}

export interface CacheListing {
  root: string;
  blobs: BlobEntry[];
  /** Everything below: indexed blobs, unindexed blobs and partial downloads. */
  totalBytes: number;
  /** Blob files the index has no row for. */
  unindexedBytes: number;
  /** Downloads in progress or abandoned, in tmp/. */
  partialBytes: number;
  /** Temp files and records nothing will finish or read once their owner is gone. */
  leftoverBytes: number;
}

export function listCache(cache: CacheHandle): CacheListing {
  const blobs = cache.index.blobs().reverse();
  const strays = strayFiles(cache);
  const unindexedBytes = sum(strays.unindexed);
  const partialBytes = sum(strays.partials);
  const leftoverBytes = sum(strays.leftovers);
  return {
    root: cache.layout.root,
    blobs,
    totalBytes: sum(blobs) + unindexedBytes + partialBytes + leftoverBytes,
    unindexedBytes,
    partialBytes,
    leftoverBytes,
  };
}

function sum(items: ReadonlyArray<{ size: number }>): number {
  return items.reduce((total, item) => total + item.size, 0);
}

interface UnindexedBlob {
  digest: string;
  size: number;
}

/** The files of one download in tmp/ (`<name>.part`, its journal, its piece list). */
interface Partial {
  /** The part's name up to its first dot: the source's key hash, or the blob's digest. */
  name: string;
  paths: string[];
  size: number;
  mtimeMs: number;
}

/**
 * A file left by a write that did not finish, or a record of something that is over: its
 * owner is the process holding the lock `locks/source-<lock>.lock` while it writes (a source,
 * or a planned download's id), or the process whose pid the name carries.
 */
interface Leftover {
  path: string;
  size: number;
  mtimeMs: number;
  /** None: a copy's record whose copy is gone or changed (nothing reads it again). */
  owner: { lock: string } | { pid: number } | 'none';
}

/** A blob's file name: its sha256. */
const BLOB_NAME = /^[0-9a-f]{64}$/;
/** What Loom names a file in tmp/: a source's key hash (32 hex) or a blob's digest, then suffixes. */
const PARTIAL_NAME = /^(?:[0-9a-f]{32}|[0-9a-f]{64})\./;
/** A temp file written then renamed over its name (`<name>.<pid>.tmp`). */
const TEMP_SUFFIX = /\.(\d+)\.tmp$/;
/** A failed owner's record being written (single-flight.ts writeFailure), under its source's lock. */
const FAILURE_TEMP = /^source-([0-9a-f]{32})\.failed\.json\.\d+\.tmp$/;
/** A copy's record (copy-stamps.ts). */
const COPY_RECORD = /^[0-9a-f]{32}\.json$/;
/** The temp files of the records written beside the layout: manifests, copies, hints. */
const RECORD_TEMP = /^(?:[0-9a-f]{64}|[0-9a-f]{32}|[0-9a-f]{16})\.json\.(\d+)\.tmp$/;

/**
 * Files in the cache the index does not account for. Only names Loom gives count: a
 * --cache-dir pointed at the wrong folder (`/`, whose tmp/ is /tmp) must not have gc
 * delete files that are not Loom's.
 */
function strayFiles(cache: CacheHandle): { unindexed: UnindexedBlob[]; partials: Partial[]; leftovers: Leftover[] } {
  const { layout, index } = cache;
  const indexed = new Set(index.blobs().map((b) => b.digest));
  const unindexed: UnindexedBlob[] = [];
  for (const digest of listDir(layout.blobs)) {
    if (indexed.has(digest) || !BLOB_NAME.test(digest)) continue;
    const stats = statSync(join(layout.blobs, digest), { throwIfNoEntry: false });
    if (stats?.isFile()) unindexed.push({ digest, size: stats.size });
  }
  const groups = new Map<string, Array<{ path: string; size: number; mtimeMs: number }>>();
  for (const file of listDir(layout.tmp)) {
    if (!PARTIAL_NAME.test(file)) continue;
    const path = join(layout.tmp, file);
    const stats = statSync(path, { throwIfNoEntry: false });
    if (!stats?.isFile()) continue;
    const name = file.split('.')[0]!;
    groups.set(name, [...(groups.get(name) ?? []), { path, size: stats.size, mtimeMs: stats.mtimeMs }]);
  }
  const partials: Partial[] = [];
  const leftovers: Leftover[] = [];
  for (const [name, files] of groups) {
    // Without its part, a download's journal and pieces record describe bytes that are gone
    // (a kill -9 after the part was stored or discarded, before they were removed); the temp
    // file of a record is never renamed once its writer is gone.
    const hasPart = files.some((f) => f.path.endsWith('.part'));
    const kept = files.filter((f) => hasPart && !TEMP_SUFFIX.test(f.path));
    for (const f of files) if (!kept.includes(f)) leftovers.push({ ...f, owner: { lock: name } });
    if (kept.length === 0) continue;
    partials.push({
      name,
      paths: kept.map((f) => f.path),
      size: sum(kept),
      mtimeMs: Math.max(...kept.map((f) => f.mtimeMs)),
    });
  }
  for (const file of listDir(layout.locks)) {
    const failure = FAILURE_TEMP.exec(file);
    if (failure) pushLeftover(leftovers, join(layout.locks, file), { lock: failure[1]! });
  }
  for (const dir of [layout.manifests, layout.copies, layout.hints]) {
    for (const file of listDir(dir)) {
      const path = join(dir, file);
      const temp = RECORD_TEMP.exec(file);
      if (temp) pushLeftover(leftovers, path, { pid: Number(temp[1]) });
      // A copy's record whose copy is gone or changed: nothing will read it again.
      else if (dir === layout.copies && COPY_RECORD.test(file) && copyRecordStale(path))
        pushLeftover(leftovers, path, 'none');
    }
  }
  return { unindexed, partials: partials.sort((a, b) => a.mtimeMs - b.mtimeMs), leftovers };
}

function pushLeftover(leftovers: Leftover[], path: string, owner: Leftover['owner']): void {
  const stats = statSync(path, { throwIfNoEntry: false });
  if (stats?.isFile()) leftovers.push({ path, size: stats.size, mtimeMs: stats.mtimeMs, owner });
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * A partial (or leftover) without a lock file of its name is left alone this long after its
 * last write: nothing else says whether a download is still writing it. Every download
 * holds one now (a source's under its key hash, a planned one under its id: single-flight.ts
 * holdPartialLock); a planned download of an older Loom did not.
 */
const UNLOCKED_PARTIAL_GRACE_MS = 60 * 60 * 1000;

/**
 * A temp file named by its writer's pid (`*.json.<pid>.tmp`) is left alone this long after
 * its last write, and abandoned after it, whatever its pid: its rename follows the write
 * within milliseconds. The pid says nothing here: a writer in another pid namespace (another
 * container sharing the cache) has a pid this one cannot see, and a dead writer's pid may be
 * running here (pid 1: an agent as its container's first process, killed and restarted),
 * which kept its file for ever. A file dated this far in the future is abandoned too: a
 * clock set back (or a restored cache) does not make it young for that long.
 */
export const PID_TEMP_GRACE_MS = 10 * 60 * 1000;

export interface VerifyReport {
  checked: number;
  /** Blobs whose bytes no longer match their name, or that are missing; removed. */
  corrupt: string[];
  /**
   * For a corrupt blob that other paths hard-link (outputs and HF cache files placed from the
   * cache): how many. They hold the same damaged bytes, and removing the blob does not mend
   * them; the user must fetch them again.
   */
  corruptLinks: Record<string, number>;
}

/** Rehashes every blob; removes the ones that do not match (a later fetch downloads them again). */
export async function verifyCache(cache: CacheHandle, onBlob?: (digest: string) => void): Promise<VerifyReport> {
  const report: VerifyReport = { checked: 0, corrupt: [], corruptLinks: {} };
  for (const blob of cache.index.blobs()) {
    onBlob?.(blob.digest);
    report.checked++;
    const path = blobPath(cache.layout, blob.digest);
    const actual = await sha256OfFile(path).catch(() => undefined);
    if (actual !== blob.digest) {
      report.corrupt.push(blob.digest);
      const otherLinks = (statSync(path, { throwIfNoEntry: false })?.nlink ?? 1) - 1;
      if (otherLinks > 0) report.corruptLinks[blob.digest] = otherLinks;
      await dropBlob(cache, blob);
    }
  }
  return report;
}

export interface GcReport {
  evicted: BlobEntry[];
  /** Left in place although the size asked for it: in use by a running process. */
  skippedInUse: string[];
  /** Blob files without an index row, removed (digests). */
  removedUnindexed: string[];
  /** Abandoned partial downloads removed from tmp/ (their names). */
  removedPartials: string[];
  /** Leftovers whose owner is gone, removed whatever the size (paths under the cache root). */
  removedLeftovers: string[];
  freedBytes: number;
  remainingBytes: number;
  dryRun: boolean;
}

/**
 * Removes what nothing owns, then brings the cache down to at most `maxBytes` (Infinity:
 * only the first step). Nothing owns leftovers whose owner is gone, blobs without an index
 * row (removed when no download is running, since one may be between storing its blob and
 * recording it) nor partial downloads nobody is running (their source lock free; one
 * without a lock of its name, after a grace period): a fetch whose cache disk filled up, or
 * that was killed, leaves them. Then the least recently used blobs go, never one in use.
 */
export async function gcCache(cache: CacheHandle, maxBytes = Infinity, dryRun = false): Promise<GcReport> {
  const { takeFreeSourceLock, anySourceLockHeld } = await import('./single-flight.js');
  const blobs = cache.index.blobs();
  const strays = strayFiles(cache);
  let total = sum(blobs) + sum(strays.unindexed) + sum(strays.partials) + sum(strays.leftovers);
  const report: GcReport = {
    evicted: [],
    skippedInUse: [],
    removedUnindexed: [],
    removedPartials: [],
    removedLeftovers: [],
    freedBytes: 0,
    remainingBytes: total,
    dryRun,
  };
  const freed = (size: number) => {
    report.freedBytes += size;
    total -= size;
  };
  // Leftovers are nobody's once their owner is gone: collected whatever the size asked for,
  // each under its owner's lock (taken, so that no download starts writing it meanwhile).
  for (const leftover of strays.leftovers) {
    let release: (() => void) | undefined;
    if (leftover.owner === 'none') {
      // Nobody's: removed as found.
    } else if ('lock' in leftover.owner) {
      const lock = await takeFreeSourceLock(cache.layout, leftover.owner.lock);
      if (lock === 'held') continue;
      if (lock === 'no-lock' && Date.now() - leftover.mtimeMs < UNLOCKED_PARTIAL_GRACE_MS) continue;
      if (typeof lock === 'function') release = lock;
    } else if (Math.abs(Date.now() - leftover.mtimeMs) < PID_TEMP_GRACE_MS) {
      continue;
    }
    try {
      if (!dryRun) await rm(leftover.path, { force: true });
    } finally {
      release?.();
    }
    report.removedLeftovers.push(relative(cache.layout.root, leftover.path));
    freed(leftover.size);
  }
  if (strays.unindexed.length > 0 && !(await anySourceLockHeld(cache.layout))) {
    for (const blob of strays.unindexed) {
      if (await blobInUse(cache.layout, blob.digest)) continue;
      if (!dryRun) await rm(blobPath(cache.layout, blob.digest), { force: true });
      report.removedUnindexed.push(blob.digest);
      freed(blob.size);
    }
  }
  for (const partial of strays.partials) {
    const lock = await takeFreeSourceLock(cache.layout, partial.name);
    if (lock === 'held') continue;
    if (lock === 'no-lock' && Date.now() - partial.mtimeMs < UNLOCKED_PARTIAL_GRACE_MS) continue;
    try {
      if (!dryRun) for (const path of partial.paths) await rm(path, { force: true });
    } finally {
      if (typeof lock === 'function') lock();
    }
    report.removedPartials.push(partial.name);
    freed(partial.size);
  }
  for (const blob of blobs) {
    if (total <= maxBytes) break;
    if (await blobInUse(cache.layout, blob.digest)) {
      report.skippedInUse.push(blob.digest);
      continue;
    }
    if (!dryRun) await dropBlob(cache, blob);
    report.evicted.push(blob);
    freed(blob.size);
  }
  report.remainingBytes = total;
  return report;
}

/** Removes a blob by digest, or a source's mapping (and its blob if nothing else maps to it). */
export async function removeFromCache(cache: CacheHandle, target: string): Promise<{ removed: string[] }> {
  if (/^[0-9a-f]{64}$/i.test(target)) {
    const digest = target.toLowerCase();
    const blob = cache.index.blob(digest);
    if (!blob) throw new NotFoundError(`no blob ${digest} in the cache`);
    if (await blobInUse(cache.layout, digest)) throw new CacheError(`blob ${digest} is in use by a running process`);
    await dropBlob(cache, blob);
    return { removed: [digest] };
  }
  const key = sourceKey(target);
  // The entry without credentials, and those fetched with credentials (keyed apart).
  const keys = cache.index
    .blobs()
    .flatMap((b) => b.sources)
    .filter((k) => sourceKeyOf(k) === key);
  if (keys.length === 0) throw new NotFoundError(`no cache entry for ${key}`, { hint: 'see loom cache ls' });
  const removed: string[] = [];
  for (const k of keys) {
    const entry = cache.index.source(k);
    if (!entry) continue;
    cache.index.removeSource(k);
    removed.push(k);
    const blob = cache.index.blob(entry.digest);
    if (blob && blob.sources.length === 0 && !(await blobInUse(cache.layout, entry.digest))) {
      await dropBlob(cache, blob);
      removed.push(entry.digest);
    }
  }
  return { removed };
}
