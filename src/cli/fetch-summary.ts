// What a finished `loom fetch` prints: one JSON document with --json, else one human line
// saying the size, the time, the rate, where the bytes came from and the digest check made.
import { formatBytes, formatRate, formatSeconds, plural } from '../core/units.js';
import type { CachedFetchResult } from '../cache/cached-fetch.js';
import type { FetchResult } from '../fetch/fetch-file.js';

function bytesPerSecond(result: FetchResult): number {
  return result.stats.transferredBytes / Math.max(result.seconds, 1e-6);
}

/** The --json document of a finished fetch. */
export function summaryOf(result: FetchResult | CachedFetchResult): Record<string, unknown> {
  const cache = 'cache' in result ? result : undefined;
  const rate = bytesPerSecond(result);
  return {
    ok: true,
    cache: cache?.cache ?? 'off',
    materialization: cache?.materialization ?? null,
    waitedForOtherProcess: cache?.waited ?? false,
    // Why the download went straight to the output, and the bytes moved there from the cache.
    cacheBypass: cache?.bypassed ?? null,
    url: result.url,
    path: result.path,
    bytes: result.size,
    seconds: Number(result.seconds.toFixed(3)),
    // MB = 10^6 bytes, as everywhere Loom prints a rate; three significant digits, so a
    // small file's rate is not rounded to 0.
    mbPerSecond: Number((rate / 1e6).toPrecision(3)),
    bytesPerSecond: Math.round(rate),
    sha256: result.sha256 ?? null,
    requests: result.stats.requests,
    retries: result.stats.retries,
    splits: result.stats.splits,
    restarts: result.stats.restarts,
    transferredBytes: result.stats.transferredBytes,
    resumedBytes: result.stats.resumedBytes,
    // How long the sha256 took after the last byte arrived (null when none was computed).
    lastByteToDigestSeconds:
      result.stats.lastByteToDigestSeconds === undefined
        ? null
        : Number(result.stats.lastByteToDigestSeconds.toFixed(3)),
    // Bytes past the finished prefix when the last byte arrived: hashed only after it.
    prefixBehindAtLastByte: result.stats.prefixBehindAtLastByte ?? null,
    // Bytes run through sha256, each hash counted (whole file plus piece digests: twice the file).
    hashedBytes: result.stats.hashedBytes,
    // Where the bytes came from (origin, each peer by node id) and the sources dropped.
    bytesBySource: 'bytesBySource' in result ? result.bytesBySource : null,
    droppedSources: 'droppedSources' in result ? result.droppedSources : [],
    // s3:// only: which of S3's stored checksums the bytes were checked against.
    ...('s3Check' in result ? { s3Check: result.s3Check } : {}),
    ...('hubCheck' in result ? { hubCheck: result.hubCheck } : {}),
  };
}

function origin(result: FetchResult | CachedFetchResult): string {
  const cached = 'cache' in result ? result : undefined;
  if (cached?.cache === 'hit') {
    const how = cached.materialization ? ` (${cached.materialization})` : '';
    return cached.waited ? `from the cache, downloaded by another process${how}` : `from the cache${how}`;
  }
  const { requests, retries, resumedBytes } = result.stats;
  const details = [plural(requests, 'request'), ...(retries ? [plural(retries, 'retry', 'retries')] : [])];
  const resumed = resumedBytes > 0 ? `, ${formatBytes(resumedBytes)} resumed from the partial file` : '';
  const moved = cached?.bypassed?.movedBytes
    ? `, ${formatBytes(cached.bypassed.movedBytes)} of them downloaded into the cache before its disk filled up`
    : '';
  const bySource = 'bytesBySource' in result ? (result.bytesBySource as Record<string, number>) : {};
  const peers = Object.entries(bySource).filter(([id, bytes]) => id !== 'origin' && bytes > 0);
  if (peers.length > 0) {
    const peerBytes = peers.reduce((sum, [, bytes]) => sum + bytes, 0);
    return (
      `${formatBytes(peerBytes)} from ${plural(peers.length, 'peer')} and ${formatBytes(bySource.origin ?? 0)} ` +
      `from the origin (${details.join(', ')})${resumed}${moved}`
    );
  }
  return `from the origin (${details.join(', ')})${resumed}${moved}`;
}

function digestCheck(result: FetchResult, expected: string | undefined): string {
  if (expected) return 'sha256 matches --sha256';
  const s3Check = 's3Check' in result ? (result.s3Check as { check: string }).check : 'none';
  if (s3Check === 'sha256-full-object') return "sha256 matches S3's stored checksum";
  if (s3Check === 'sha256-composite') return "every part's sha256 matches S3's stored checksums";
  const hubCheck = 'hubCheck' in result ? (result.hubCheck as string) : 'none';
  if (hubCheck === 'sha256') return "sha256 matches the Hub's (X-Linked-Etag)";
  if (hubCheck === 'git-sha1') return "git blob sha1 matches the Hub's";
  if (hubCheck === 'hf-cache') return 'from the HF cache (HF_HUB_OFFLINE), checked when it was stored';
  if (result.sha256) return `sha256 ${result.sha256.slice(0, 12)}… (not checked: no --sha256)`;
  return 'no digest check (no --sha256)';
}

/** The one human line of a finished fetch. */
export function summaryLine(result: FetchResult | CachedFetchResult, expectedSha256?: string): string {
  const moved = result.stats.transferredBytes > 0 ? `, ${formatRate(bytesPerSecond(result))}` : '';
  return (
    `loom: ${result.path === '-' ? 'stdout' : result.path}: ${formatBytes(result.size)} in ${formatSeconds(result.seconds)}${moved}, ` +
    `${origin(result)}; ${digestCheck(result, expectedSha256)}`
  );
}
