// Whether a blob file may be served, checked on the index path: it is there with the stamp
// recorded (blob-identity.ts), or a rehash proves its bytes still match its name (and the
// record is brought up to date). A blob whose bytes no longer match is removed with its
// index rows, so the caller downloads it again. Also: recording the stamp Loom's own hard
// links leave, so that they do not make the next hit rehash.
import { rmSync, type Stats } from 'node:fs';
import { sha256OfFile } from './blob-store.js';
import { currentStamp, sameStamp, stampOf, type BlobStamp } from './blob-identity.js';
import type { CacheIndex } from './cache-index.js';
import { blobPath, type CacheLayout } from './cache-root.js';
import { readHint, writeHint, type HitHint } from './hit-hints.js';

/** Blobs this large or larger are not rehashed without saying so. */
export const REHASH_NOTICE_BYTES = 64 * 1024 * 1024;

/**
 * The blob's stamp when it may be served (there, `size` bytes, and as recorded or rehashed
 * intact); undefined when it is missing or damaged (then removed).
 */
export async function checkedBlob(
  index: CacheIndex,
  layout: CacheLayout,
  digest: string,
  size: number,
  recorded: BlobStamp | undefined,
  status: (message: string) => void = () => undefined,
): Promise<BlobStamp | undefined> {
  const now = currentStamp(layout, digest);
  if (!now || now.size !== size) return undefined;
  if (sameStamp(now, recorded)) return now;
  const keys = index.blob(digest)?.sources ?? [];
  // A hit served from a hint records the stamp its link left there, not in the index.
  if (keys.some((key) => sameStamp(readHint(layout, key)?.stamp, now))) {
    index.restamp(digest, now);
    return now;
  }
  // Said for a large blob, because it takes a second or more per GiB where a hit takes
  // milliseconds; a small one is checked in no time worth a line.
  if (size >= REHASH_NOTICE_BYTES)
    status(`the cached copy of ${digest} changed on disk since it was recorded; checking its sha256`);
  const actual = await sha256OfFile(blobPath(layout, digest)).catch(() => undefined);
  if (actual === digest) {
    index.restamp(digest, now);
    return now;
  }
  status(`the cached copy of ${digest} was changed on disk (not by Loom); discarding it`);
  rmSync(blobPath(layout, digest), { force: true });
  index.removeBlob(digest);
  return undefined;
}

/** For materialize: after a link of ours, records the blob's new stamp if it was as recorded before. */
export function recordLinkInIndex(index: CacheIndex, digest: string): (before: Stats, after: Stats) => void {
  return (before, after) => {
    if (sameStamp(stampOf(before), index.blob(digest)?.stamp)) index.restamp(digest, stampOf(after));
  };
}

/** The same for a hit served from its hint, without the index: the hint takes the new stamp. */
export function recordLinkInHint(layout: CacheLayout, hint: HitHint): (before: Stats, after: Stats) => void {
  return (before, after) => {
    if (sameStamp(stampOf(before), hint.stamp)) writeHint(layout, { ...hint, stamp: stampOf(after) });
  };
}
