// fetchFile: one URL to one path. The output path only ever holds a complete file that
// passed every check: bytes land in `<out>.part` (locked to this run) and are renamed into
// place at the end. fetchFileChecked adds a check of the caller's (the Hub's git sha1) run
// on the finished file before it takes the output's name.
import { rename, rm } from 'node:fs/promises';
import { diskError, LoomError } from '../core/errors.js';
import { sourceFor } from '../sources/index.js';
import type { DownloadResult } from './download.js';
import { resolveFetchOptions, sourceOptionsOf, type FetchOptions } from './options.js';

export interface FetchResult extends DownloadResult {
  path: string;
  url: string;
  seconds: number;
}

export function partPathFor(out: string): string {
  return `${out}.part`;
}

/**
 * Downloads `url` to `out`. `prepare(part)`, when given, runs once `part` is locked to this run
 * and before the download starts: the node cache moves the bytes it already has there (a
 * full cache disk).
 */
export async function fetchFile(
  url: string,
  out: string,
  options: FetchOptions = {},
  prepare?: (part: string) => Promise<void>,
): Promise<FetchResult> {
  const resolved = resolveFetchOptions(options);
  const source = sourceFor(url, sourceOptionsOf(resolved));
  // The engine is loaded when a download really starts; a cache hit never needs it.
  const [{ downloadToPart }, { moveIntoPlace }, { lockPart }] = await Promise.all([
    import('./download.js'),
    import('./part-file.js'),
    import('./part-lock.js'),
  ]);
  const started = performance.now();
  const part = partPathFor(out);
  try {
    const unlock = await lockPart(part);
    try {
      await prepare?.(part);
      const result = await downloadToPart(source, part, resolved);
      await moveIntoPlace(part, out);
      return { ...result, path: out, url: source.url, seconds: (performance.now() - started) / 1000 };
    } finally {
      await unlock();
    }
  } finally {
    source.close();
  }
}

/**
 * fetchFile, then `check` on the finished file before it is renamed to `out`: it waits under
 * another name meanwhile, removed when the check (or the rename) fails, so `out` only ever
 * holds bytes that passed. The check's own LoomError is thrown as it is. The lock of `out`'s
 * own part is held from the download to the rename: the landing's lock ends with its
 * download, and another run taking it then replaced the landing while this one checked it,
 * so that this one renamed unchecked bytes to `out`.
 */
export async function fetchFileChecked(
  url: string,
  out: string,
  options: FetchOptions,
  check: (path: string) => Promise<void>,
  prepare?: (part: string) => Promise<void>,
): Promise<FetchResult> {
  const { lockPart } = await import('./part-lock.js');
  const unlock = await lockPart(partPathFor(out));
  try {
    const landing = `${out}.loom-unverified`;
    const result = await fetchFile(url, landing, options, prepare);
    try {
      await check(landing);
      await rename(landing, out);
    } catch (err) {
      await rm(landing, { force: true });
      throw err instanceof LoomError ? err : diskError(err, `placing ${out}`);
    }
    return { ...result, path: out };
  } finally {
    await unlock();
  }
}
