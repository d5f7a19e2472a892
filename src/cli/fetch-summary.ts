// What a finished `loom fetch` prints: one JSON document with --json, else one human line.
import { formatBytes } from '../core/units.js';
import type { CachedFetchResult } from '../cache/cached-fetch.js';
import type { FetchResult } from '../fetch/fetch-file.js';

/** The --json document of a finished fetch. */
export function summaryOf(result: FetchResult | CachedFetchResult): Record<string, unknown> {
  const cache = 'cache' in result ? result : undefined;
  return {
    ok: true,
    cache: cache?.cache ?? 'off',
    materialization: cache?.materialization ?? null,
    waitedForOtherProcess: cache?.waited ?? false,
    url: result.url,
    path: result.path,
    bytes: result.size,
    seconds: Number(result.seconds.toFixed(3)),
    mbPerSecond: Number((result.stats.transferredBytes / 1e6 / Math.max(result.seconds, 1e-6)).toFixed(1)),
    sha256: result.sha256 ?? null,
    requests: result.stats.requests,
    retries: result.stats.retries,
    splits: result.stats.splits,
    restarts: result.stats.restarts,
    transferredBytes: result.stats.transferredBytes,
    resumedBytes: result.stats.resumedBytes,
  };
}

/** The one human line of a finished fetch. */
export function summaryLine(result: FetchResult | CachedFetchResult): string {
  const rate = result.stats.transferredBytes / 1e6 / Math.max(result.seconds, 1e-6);
  const cached = 'cache' in result ? result : undefined;
  const how = cached?.cache === 'hit' ? `cache hit, ${cached.materialization}` : `${rate.toFixed(0)} MB/s`;
  return `loom: ${result.path}: ${formatBytes(result.size)} in ${result.seconds.toFixed(2)} s (${how})`;
}
