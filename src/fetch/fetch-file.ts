// fetchFile: one URL to one path. The output path only ever holds a complete file that
// passed every check: bytes land in `<out>.part` (locked to this run) and are renamed into
// place at the end.
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

export async function fetchFile(url: string, out: string, options: FetchOptions = {}): Promise<FetchResult> {
  return fetchFileOnto(url, out, options);
}

/**
 * fetchFile, with `prepare(part)` run once `part` is locked to this run and before the
 * download starts: the node cache moves the bytes it already has there (a full cache disk).
 */
export async function fetchFileOnto(
  url: string,
  out: string,
  options: FetchOptions,
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
