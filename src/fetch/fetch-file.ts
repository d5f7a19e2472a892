// fetchFile: one URL to one path. The output path only ever holds a complete file that
// passed every check: bytes land in `<out>.part` and are renamed into place at the end.
import { performance } from 'node:perf_hooks';
import { HttpSource } from '../sources/http.js';
import { downloadToPart, type DownloadResult } from './download.js';
import { journalPathFor, removeJournal } from './journal.js';
import { moveIntoPlace } from './part-file.js';
import { resolveFetchOptions, type FetchOptions, type ResolvedFetchOptions } from './options.js';

export interface FetchResult extends DownloadResult {
  path: string;
  url: string;
  seconds: number;
}

export function partPathFor(out: string): string {
  return `${out}.part`;
}

export async function fetchFile(url: string, out: string, options: FetchOptions = {}): Promise<FetchResult> {
  const resolved = resolveFetchOptions(options);
  const source = httpSourceFor(url, resolved);
  const started = performance.now();
  const part = partPathFor(out);
  try {
    const result = await downloadToPart(source, part, resolved);
    await moveIntoPlace(part, out);
    await removeJournal(journalPathFor(part));
    return { ...result, path: out, url: source.url, seconds: (performance.now() - started) / 1000 };
  } finally {
    source.close();
  }
}

export function httpSourceFor(url: string, options: ResolvedFetchOptions): HttpSource {
  return new HttpSource(url, {
    headers: options.headers,
    maxRedirects: options.maxRedirects,
    stallTimeoutMs: options.stallTimeoutMs,
    maxSockets: options.workers,
    caCertFiles: options.caCertFiles,
  });
}
