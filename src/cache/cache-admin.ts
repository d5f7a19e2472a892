// `loom cache` operations on a cache root: list, verify, garbage-collect and remove. Opening
// the cache folds the uses recorded in hit hints into the index first, so that LRU order
// counts hits served without SQLite.
import { rm } from 'node:fs/promises';
import { CacheError, NotFoundError } from '../core/errors.js';
import { blobInUse, ensureLayout, sha256OfFile } from './blob-store.js';
import { CacheIndex, type BlobEntry } from './cache-index.js';
import { blobPath, cacheLayout, type CacheLayout } from './cache-root.js';
import { sourceKey } from './source-key.js';

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
  totalBytes: number;
}

export function listCache(cache: CacheHandle): CacheListing {
  const blobs = cache.index.blobs().reverse();
  return { root: cache.layout.root, blobs, totalBytes: blobs.reduce((sum, b) => sum + b.size, 0) };
}

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
  freedBytes: number;
  remainingBytes: number;
  dryRun: boolean;
}

/** Evicts least recently used blobs until the cache holds at most `maxBytes`. */
export async function gcCache(cache: CacheHandle, maxBytes: number, dryRun = false): Promise<GcReport> {
  const blobs = cache.index.blobs();
  let total = blobs.reduce((sum, b) => sum + b.size, 0);
  const report: GcReport = { evicted: [], skippedInUse: [], freedBytes: 0, remainingBytes: total, dryRun };
  for (const blob of blobs) {
    if (total <= maxBytes) break;
    if (await blobInUse(cache.layout, blob.digest)) {
      report.skippedInUse.push(blob.digest);
      continue;
    }
    if (!dryRun) await dropBlob(cache, blob);
    report.evicted.push(blob);
    report.freedBytes += blob.size;
    total -= blob.size;
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
  const entry = cache.index.source(key);
  if (!entry) throw new NotFoundError(`no cache entry for ${key}`, { hint: 'see loom cache ls' });
  cache.index.removeSource(key);
  const removed = [key];
  const blob = cache.index.blob(entry.digest);
  if (blob && blob.sources.length === 0 && !(await blobInUse(cache.layout, entry.digest))) {
    await dropBlob(cache, blob);
    removed.push(entry.digest);
  }
  return { removed };
}
