// Where the cache lives: --cache-dir, else LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else
// ~/.cache/loom. The layout under it:
//   blobs/sha256/<hex>   finished, verified, read-only content
//   tmp/                 downloads in progress (same file system, so finishing is a rename)
//   locks/               one lock per source being downloaded
//   index.db             SQLite: source key -> digest, sizes, validators, use times
//   hints/               a copy of each index row as a small file, read by the hit fast path
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export function resolveCacheRoot(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag) return resolve(flag);
  if (env.LOOM_CACHE_DIR) return resolve(env.LOOM_CACHE_DIR);
  if (env.XDG_CACHE_HOME) return join(resolve(env.XDG_CACHE_HOME), 'loom');
  return join(homedir(), '.cache', 'loom');
}

export interface CacheLayout {
  root: string;
  blobs: string;
  tmp: string;
  locks: string;
  index: string;
  hints: string;
}

export function cacheLayout(root: string): CacheLayout {
  return {
    root,
    blobs: join(root, 'blobs', 'sha256'),
    tmp: join(root, 'tmp'),
    locks: join(root, 'locks'),
    index: join(root, 'index.db'),
    hints: join(root, 'hints'),
  };
}

export function blobPath(layout: CacheLayout, digest: string): string {
  return join(layout.blobs, digest);
}

/** `tmp/<name>.part`: a download in progress, named by its source's key hash or its blob's digest. */
export function partPath(layout: CacheLayout, name: string): string {
  return join(layout.tmp, `${name}.part`);
}
