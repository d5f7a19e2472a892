// Checks for Hub files that have no sha256: small (non-LFS) files are named by their git blob
// sha1, sha1("blob <size>\0" + bytes). A file that fails is removed, and so is the node
// cache's copy, so that a rerun downloads it again instead of serving the bad bytes.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { DigestMismatchError } from '../core/errors.js';
import { resolveCacheRoot } from '../cache/cache-root.js';

export async function gitBlobSha1OfFile(path: string, size: number): Promise<string> {
  const hash = createHash('sha1').update(`blob ${size}\0`);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Throws DigestMismatchError (having removed the file and the cache entry) unless `file` is `expected`. */
export async function verifyGitSha1(
  file: string,
  size: number,
  expected: string,
  what: { url: string; label: string; cacheDir: string | undefined },
): Promise<void> {
  const actual = await gitBlobSha1OfFile(file, size);
  if (actual === expected) return;
  await rm(file, { force: true });
  try {
    // SQLite is loaded only on this rare path.
    const { openCache, removeFromCache } = await import('../cache/cache-admin.js');
    const cache = await openCache(resolveCacheRoot(what.cacheDir));
    try {
      await removeFromCache(cache, what.url);
    } finally {
      cache.close();
    }
  } catch {
    // Nothing cached for it (or no cache): nothing to take back.
  }
  throw new DigestMismatchError(`${what.label}: git sha1 ${actual} is not the ${expected} the Hub gave`, {
    url: what.url,
    expected,
    actual,
    hint: 'nothing was kept; rerun to download it again',
  });
}
