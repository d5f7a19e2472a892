// `loom cache` operations on a cache root: list, verify, garbage-collect and remove. Opening
// the cache folds the uses recorded in hit hints into the index first, so that LRU order
// counts hits served without SQLite. The cache's size counts everything it holds on disk:
// indexed blobs, blobs without an index row (a record lost to a full disk or a crash) and
// partial downloads in tmp/. gc collects the last two whatever the size asked for, once no
// process owns them: they are reachable from nowhere and may hold a full disk.
import { readdirSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CacheError, NotFoundError } from '../core/errors.js';
import { blobInUse, ensureLayout, sha256OfFile } from './blob-store.js';
import { CacheIndex, type BlobEntry } from './cache-index.js';
import { blobPath, cacheLayout, type CacheLayout } from './cache-root.js';
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
}

export function listCache(cache: CacheHandle): CacheListing {
  const blobs = cache.index.blobs().reverse();
  const strays = strayFiles(cache);
  const unindexedBytes = sum(strays.unindexed);
  const partialBytes = sum(strays.partials);
  return {
    root: cache.layout.root,
    blobs,
    totalBytes: sum(blobs) + unindexedBytes + partialBytes,
    unindexedBytes,
    partialBytes,
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

/** A blob's file name: its sha256. */
const BLOB_NAME = /^[0-9a-f]{64}$/;
/** What Loom names a file in tmp/: a source's key hash (32 hex) or a blob's digest, then suffixes. */
const PARTIAL_NAME = /^(?:[0-9a-f]{32}|[0-9a-f]{64})\./;

/**
 * Files in the cache the index does not account for. Only names Loom gives count: a
 * --cache-dir pointed at the wrong folder (`/`, whose tmp/ is /tmp) must not have gc
 * delete files that are not Loom's.
 */
function strayFiles(cache: CacheHandle): { unindexed: UnindexedBlob[]; partials: Partial[] } {
  const { layout, index } = cache;
  const indexed = new Set(index.blobs().map((b) => b.digest));
  const unindexed: UnindexedBlob[] = [];
  for (const digest of listDir(layout.blobs)) {
    if (indexed.has(digest) || !BLOB_NAME.test(digest)) continue;
    const stats = statSync(join(layout.blobs, digest), { throwIfNoEntry: false });
    if (stats?.isFile()) unindexed.push({ digest, size: stats.size });
  }
  const partials = new Map<string, Partial>();
  for (const file of listDir(layout.tmp)) {
    if (!PARTIAL_NAME.test(file)) continue;
    const stats = statSync(join(layout.tmp, file), { throwIfNoEntry: false });
    if (!stats?.isFile()) continue;
    const name = file.split('.')[0]!;
    const partial = partials.get(name) ?? { name, paths: [], size: 0, mtimeMs: 0 };
    partial.paths.push(join(layout.tmp, file));
    partial.size += stats.size;
    partial.mtimeMs = Math.max(partial.mtimeMs, stats.mtimeMs);
    partials.set(name, partial);
  }
  return { unindexed, partials: [...partials.values()].sort((a, b) => a.mtimeMs - b.mtimeMs) };
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * A partial without a source lock of its name (one the engine keeps under the blob's
 * digest) is left alone this long after its last write: nothing else says whether a
 * download is still writing it.
 */
const UNLOCKED_PARTIAL_GRACE_MS = 60 * 60 * 1000;

export interface VerifyReport {
  checked: number;
  /** Blobs whose bytes no longer match their name, or that are missing; removed. */
  corrupt: string[];
}

/** Rehashes every blob; removes the ones that do not match (a later fetch downloads them again). */
export async function verifyCache(cache: CacheHandle, onBlob?: (digest: string) => void): Promise<VerifyReport> {
  const report: VerifyReport = { checked: 0, corrupt: [] };
  for (const blob of cache.index.blobs()) {
    onBlob?.(blob.digest);
    report.checked++;
    const path = blobPath(cache.layout, blob.digest);
    const actual = await sha256OfFile(path).catch(() => undefined);
    if (actual !== blob.digest) {
      report.corrupt.push(blob.digest);
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
  freedBytes: number;
  remainingBytes: number;
  dryRun: boolean;
}

/**
 * Removes what nothing owns, then brings the cache down to at most `maxBytes` (Infinity:
 * only the first step). Nothing owns blobs without an index row (removed when no download
 * is running, since one may be between storing its blob and recording it) nor partial
 * downloads nobody is running (their source lock free; one without a lock of its name,
 * after a grace period): a fetch whose cache disk filled up, or that was killed, leaves them.
 * Then the least recently used blobs go, never one in use.
 */
export async function gcCache(cache: CacheHandle, maxBytes = Infinity, dryRun = false): Promise<GcReport> {
  const { takeFreeSourceLock, anySourceLockHeld } = await import('./single-flight.js');
  const blobs = cache.index.blobs();
  const strays = strayFiles(cache);
  let total = sum(blobs) + sum(strays.unindexed) + sum(strays.partials);
  const report: GcReport = {
    evicted: [],
    skippedInUse: [],
    removedUnindexed: [],
    removedPartials: [],
    freedBytes: 0,
    remainingBytes: total,
    dryRun,
  };
  const freed = (size: number) => {
    report.freedBytes += size;
    total -= size;
  };
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
