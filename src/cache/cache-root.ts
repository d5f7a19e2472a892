// Where the cache lives: --cache-dir, else LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else
// ~/.cache/loom. The layout under it:
//   blobs/sha256/<hex>   finished, verified, read-only content
//   tmp/                 downloads in progress (same file system, so finishing is a rename)
//   locks/               one lock per source being downloaded
//   index.db             SQLite: source key -> digest, sizes, validators, use times
//   hints/               a copy of each index row as a small file, read by the hit fast path
//   manifests/           a complete blob's manifest, published by the agent (cached-manifest.ts)
//   copies/              the stamp of each copy placed on another file system (copy-stamps.ts)
// FOLDERS below is that list, once: the layout, the made-by-Loom test and gc read it.
import { readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { CacheError, UsageError } from '../core/errors.js';

/**
 * An empty --cache-dir or LOOM_CACHE_DIR is an error, not the default: `--cache-dir "$DIR"`
 * with DIR unset must not make `cache rm` or `gc` act on ~/.cache/loom.
 */
export function resolveCacheRoot(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag !== undefined) return resolve(nonEmpty(flag, '--cache-dir'));
  if (env.LOOM_CACHE_DIR !== undefined) return resolve(nonEmpty(env.LOOM_CACHE_DIR, 'LOOM_CACHE_DIR'));
  if (env.XDG_CACHE_HOME) return join(resolve(env.XDG_CACHE_HOME), 'loom');
  return join(homedir(), '.cache', 'loom');
}

function nonEmpty(value: string, name: string): string {
  if (value.trim() === '')
    throw new UsageError(`${name} is empty`, { hint: `give ${name} a directory, or leave it out for the default` });
  return value;
}

/**
 * The cache's folders, by their CacheLayout name. ensureLayout makes the first four (MADE);
 * manifests/ and copies/ are made by their first write.
 */
const FOLDERS = {
  blobs: 'blobs/sha256',
  tmp: 'tmp',
  locks: 'locks',
  hints: 'hints',
  manifests: 'manifests',
  copies: 'copies',
} as const;

type Folder = keyof typeof FOLDERS;

/**
 * The folders ensureLayout makes. A root holding all of them was made by Loom (an agent
 * makes them before any fetch makes index.db): a folder put in it later (an `outputs/` a
 * pod wrote into) does not make it someone else's folder. Without this, such a root was
 * refused for good, since nothing makes index.db in a root that is refused.
 */
const MADE: readonly Folder[] = ['blobs', 'tmp', 'locks', 'hints'];

/**
 * What a root may hold besides an index: the layout, the control plane's default store, and
 * SQLite's side files. A root holding only these is a cache whose index is not made yet (a
 * crash between the folders and the index), not someone else's folder.
 */
const LOOM_NAMES = new Set(
  // lost+found: a cache on a volume of its own (a DaemonSet's dedicated disk) has one at its root.
  // control-plane.db-lock: the control plane's hold on its store (src/control-plane/sqlite-store.ts).
  [...Object.values(FOLDERS).map((dir) => dir.split('/')[0]!), 'lost+found', 'control-plane.db-lock'].concat(
    ...['index.db', 'control-plane.db'].map((db) => [db, `${db}-wal`, `${db}-shm`, `${db}-journal`]),
  ),
);

function hasLayout(root: string): boolean {
  return MADE.every((dir) => statSync(join(root, FOLDERS[dir]), { throwIfNoEntry: false })?.isDirectory() === true);
}

/**
 * Throws a CacheError when `root` is not a folder Loom may make its layout in: a file, or a
 * folder holding other things and neither index.db nor Loom's layout (a mistyped
 * --cache-dir, or `/`, whose tmp/ gc would empty). A missing or empty folder, or an existing
 * cache, passes.
 */
export function checkCacheRootFolder(root: string): void {
  let entries: string[];
  try {
    if (!statSync(root).isDirectory())
      throw new CacheError(`cache root ${root} is not a directory`, {
        path: root,
        hint: 'give --cache-dir (or LOOM_CACHE_DIR) a directory',
      });
    entries = readdirSync(root);
  } catch (err) {
    // Anything else (EACCES…) is said by the mkdir that follows, with its reason.
    if (err instanceof CacheError) throw err;
    return;
  }
  if (entries.includes('index.db')) return;
  const foreign = entries.filter((name) => !LOOM_NAMES.has(name)).sort();
  if (foreign.length === 0 || hasLayout(root)) return;
  const shown = foreign.slice(0, 3).join(', ') + (foreign.length > 3 ? ', …' : '');
  throw new CacheError(`${root} is not a Loom cache: it holds other files (${shown}) and no index.db`, {
    path: root,
    hint:
      `give --cache-dir (or LOOM_CACHE_DIR) an empty or new directory, or an existing Loom cache; Loom writes nothing into this one. ` +
      `If it is meant to be the cache, move ${foreign.length === 1 ? 'that' : 'those'} out of it (outputs go beside the cache, not in it)`,
  });
}

/** The paths of a cache's folders (FOLDERS) and of its index. */
export type CacheLayout = { root: string; index: string } & Record<Folder, string>;

export function cacheLayout(root: string): CacheLayout {
  const folders = Object.fromEntries(
    Object.entries(FOLDERS).map(([name, dir]) => [name, join(root, ...dir.split('/'))]),
  ) as Record<Folder, string>;
  return { root, index: join(root, 'index.db'), ...folders };
}

/** The folders ensureLayout makes (MADE), in order. */
export function madeFolders(layout: CacheLayout): string[] {
  return MADE.map((dir) => layout[dir]);
}

export function blobPath(layout: CacheLayout, digest: string): string {
  return join(layout.blobs, digest);
}

/** `manifests/<digest>.json`: a complete blob's manifest, kept for the agent to publish. */
export function manifestPath(layout: CacheLayout, digest: string): string {
  return join(layout.manifests, `${digest}.json`);
}

/** `tmp/<name>.part`: a download in progress, named by its source's key hash or its blob's digest. */
export function partPath(layout: CacheLayout, name: string): string {
  return join(layout.tmp, `${name}.part`);
}
