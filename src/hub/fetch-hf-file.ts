// `loom fetch hf://org/repo[@rev]/path -o OUT`: one Hub file through the node cache. The
// revision is resolved by one HEAD; the file is fetched from the commit's URL with the token
// for the Hub's host only, and verified (sha256 for LFS files by the engine, git sha1 for
// small ones here). With HF_HUB_OFFLINE the file comes from the HF cache, with no request.
import { existsSync } from 'node:fs';
import { DigestMismatchError, HubOfflineError } from '../core/errors.js';
import { fetchCached, type CacheOptions, type CachedFetchResult } from '../cache/cached-fetch.js';
import { HfRepoCache, hubCacheDir, linkBlobTo } from '../cache/hf-layout.js';
import { emptyStats } from '../fetch/stats.js';
import type { FetchResult } from '../fetch/fetch-file.js';
import { resolveFetchOptions, type FetchOptions } from '../fetch/options.js';
import { hfFileSource } from '../sources/hf/index.js';
import { hubOffline } from '../sources/hf/config.js';
import { COMMIT_HASH, DEFAULT_REVISION, formatHfRef, parseHfRef } from '../sources/hf/uri.js';
import { checkGitSha1 } from './verify.js';

export interface HfFetchOptions extends FetchOptions, CacheOptions {
  /** false: straight to `out`, bypassing the node cache (--no-cache). Default true. */
  cache?: boolean;
  token?: string;
  env?: NodeJS.ProcessEnv;
}

/** What a file from the Hub was checked against (`--json`: hubCheck). */
export type HubCheck = 'sha256' | 'git-sha1' | 'hf-cache';

export async function fetchHfFile(
  uri: string,
  out: string,
  options: HfFetchOptions = {},
): Promise<(CachedFetchResult | FetchResult) & { hubCheck: HubCheck | 'none' }> {
  // `offline` (LOOM_OFFLINE) is moot here: a commit's file never changes, so it is always on.
  const { cache = true, token, env = process.env, cacheDir, onStatus, revalidateTimeoutMs, offline, ...rest } = options;
  void offline;
  if (hubOffline(env)) return { ...(await fromHfCache(uri, out, env)), hubCheck: 'hf-cache' };
  const target = await hfFileSource(uri, {
    token,
    env,
    caCertFiles: rest.caCertFiles,
    signal: rest.signal,
    onRetry: onStatus,
  });
  // The Hub's sha256 of an LFS file at a commit is its identity: a pin it contradicts can
  // match no intact download, and a pin it agrees with must not demote it to a pin (bytes
  // that miss a pin are kept in the node cache as what the URL serves; damaged ones must not).
  const pin = rest.sha256 === undefined ? undefined : resolveFetchOptions({ sha256: rest.sha256 }).expectedSha256;
  if (target.sha256 !== undefined && pin !== undefined && pin !== target.sha256) {
    throw new DigestMismatchError(
      `sha256 mismatch for ${uri}: expected ${pin}, the Hub gives ${target.sha256} for this file at commit ${target.commit}`,
      {
        url: target.url,
        expected: pin,
        actual: target.sha256,
        hint: 'nothing was downloaded; check the --sha256 (a file at a commit never changes)',
      },
    );
  }
  const fetchOptions: FetchOptions = {
    ...rest,
    sha256: rest.sha256 ?? target.sha256,
    headers: { ...rest.headers, ...target.headers },
  };
  const gitSha1 = target.gitSha1;
  const label = formatHfRef(target.ref);
  let result: CachedFetchResult | FetchResult;
  if (cache) {
    // A small file's git sha1 is checked before the download is stored or placed, so a cached
    // copy is one that passed, and the hit is not read again.
    result = await fetchCached(target.url, out, {
      ...fetchOptions,
      cacheDir,
      onStatus,
      revalidateTimeoutMs,
      offline: true,
      // The Hub's digest, even when --sha256 repeats it: bytes that miss it are damaged, kept
      // nowhere. A pin of a small file is the caller's (its git sha1 is checked first).
      sha256FromSource: target.sha256 !== undefined || pin === undefined,
      verifyDownload: gitSha1
        ? (path) => checkGitSha1(path, target.size, gitSha1, { url: target.url, label })
        : undefined,
    });
  } else {
    const { fetchFile, fetchFileChecked } = await import('../fetch/fetch-file.js');
    result = gitSha1
      ? await fetchFileChecked(target.url, out, fetchOptions, (path) =>
          checkGitSha1(path, target.size, gitSha1, { url: target.url, label }),
        )
      : await fetchFile(target.url, out, fetchOptions);
  }
  // An LFS file's sha256 (X-Linked-Etag) was the download's expected digest; a small file's
  // git blob sha1 was checked above.
  const hubCheck = target.gitSha1 ? 'git-sha1' : fetchOptions.sha256 ? 'sha256' : 'none';
  return { ...result, url: uri, path: out, hubCheck };
}

async function fromHfCache(uri: string, out: string, env: NodeJS.ProcessEnv): Promise<FetchResult> {
  const started = performance.now();
  const ref = parseHfRef(uri);
  const revision = ref.revision ?? DEFAULT_REVISION;
  const repoCache = new HfRepoCache(hubCacheDir(env), ref.repoType, ref.repoId);
  const commit = COMMIT_HASH.test(revision) ? revision : repoCache.readRef(revision);
  if (!commit || !ref.path || !existsSync(repoCache.pointerPath(commit, ref.path))) {
    throw new HubOfflineError(`HF_HUB_OFFLINE is set and ${formatHfRef(ref)} is not in ${repoCache.hubCache}`, {
      hint: 'fetch it once with network access, or unset HF_HUB_OFFLINE',
    });
  }
  const pointer = repoCache.pointerPath(commit, ref.path);
  const blob = repoCache.resolvePointer(commit, ref.path);
  await linkBlobTo(blob, out);
  const { statSync } = await import('node:fs');
  const size = statSync(out).size;
  const etag = blob.split('/').pop()!;
  return {
    path: out,
    url: uri,
    finalUrl: pointer,
    size,
    sha256: etag.length === 64 ? etag : undefined,
    validator: { etag: `"${etag}"` },
    stats: emptyStats(),
    seconds: (performance.now() - started) / 1000,
  };
}
