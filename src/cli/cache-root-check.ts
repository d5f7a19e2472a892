// Whether a cache root exists, or could be made, without leaving anything behind; and the
// missing folders of a path (a cache root, `fetch -o a/b/c.bin`'s folder) made one by one.
// Each missing folder is made on its own (never `mkdir -p`: Node's recursive mkdir loops
// forever under /proc, where a mkdir answers ENOENT), so an impossible path fails at once
// with its reason.
import { existsSync } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CacheError, diskError } from '../core/errors.js';

/** The folders of `root` that do not exist yet, outermost first. */
function missingFolders(root: string): string[] {
  const missing: string[] = [];
  for (let dir = root; !existsSync(dir); dir = dirname(dir)) {
    missing.unshift(dir);
    if (dirname(dir) === dir) break;
  }
  return missing;
}

/**
 * Makes `path` and its missing parents one by one, outermost first; returns the folders it
 * made. On failure it removes them again and throws the system error with the folder that
 * could not be made as `dir`.
 */
export async function createFolders(path: string): Promise<string[]> {
  const created: string[] = [];
  for (const dir of missingFolders(path)) {
    try {
      await mkdir(dir);
      created.push(dir);
    } catch (err) {
      if ((err as { code?: string }).code === 'EEXIST') continue;
      await removeFolders(created);
      throw Object.assign(err as Error, { dir });
    }
  }
  return created;
}

/** Makes `root` and its missing parents one by one; throws a CacheError saying why it cannot. */
export async function createCacheRoot(root: string): Promise<string[]> {
  try {
    return await createFolders(root);
  } catch (err) {
    const dir = (err as { dir?: string }).dir ?? root;
    const cause = diskError(err, `creating ${dir}`, dir);
    throw new CacheError(`cache root ${root} cannot be created: ${cause.message}`, { path: root, cause: err });
  }
}

/** Removes the folders `created` made, innermost first, each only if it is empty. */
export async function removeFolders(created: string[]): Promise<void> {
  for (const dir of [...created].reverse()) await rmdir(dir).catch(() => undefined);
}

/**
 * Resolves when `root` exists (true) or could be created (false; nothing is left behind);
 * throws a CacheError when it can be neither.
 */
export async function cacheRootState(root: string): Promise<boolean> {
  if (existsSync(root)) return true;
  await removeFolders(await createCacheRoot(root));
  return false;
}
