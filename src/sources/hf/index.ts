// An hf:// file as something the HTTP engine can fetch: the resolve URL pinned to the commit
// the revision names (so every byte comes from that commit), the Hub's token for the Hub's
// host only (the HTTP source drops it on the redirect to the CDN), and the digest the Hub
// vouches for before any byte moves: sha256 for LFS files, the git blob sha1 for small ones.
import { HubOfflineError, UsageError } from '../../core/errors.js';
import { HubApi } from './api.js';
import { hubEndpoint, hubOffline, hubToken } from './config.js';
import { DEFAULT_REVISION, formatHfRef, parseHfRef, resolveUrl, type HfRef, type HfRepoType } from './uri.js';

export { HubApi, type HubFileMeta, type TreeEntry, normalizeEtag } from './api.js';
export { hubEndpoint, hubOffline, hubToken, hfHome } from './config.js';
export * from './uri.js';

export interface HfSourceOptions {
  /** --token; else HF_TOKEN, HF_TOKEN_PATH, $HF_HOME/token. */
  token?: string;
  /** Default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  repoType?: HfRepoType;
  caCertFiles?: readonly string[];
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Told before each wait for a retry of a Hub request. */
  onRetry?: (message: string) => void;
}

/** What fetchCached needs to fetch one Hub file, and what to check it against. */
export interface HfFileTarget {
  ref: HfRef;
  path: string;
  /** The resolve URL at the commit: immutable. */
  url: string;
  /** Authorization for the Hub's host; the HTTP source drops it when a redirect changes host. */
  headers: Record<string, string>;
  /** The file's sha256 (LFS files): its identity in the node cache. */
  sha256: string | undefined;
  /** The git blob sha1 (small files), checked after the download. */
  gitSha1: string | undefined;
  /** X-Linked-Etag / ETag: the blob's name in the HF cache. */
  etag: string;
  size: number;
  commit: string;
}

/** Resolves `hf://[datasets/]org/repo[@rev]/path` with one HEAD to the Hub. */
export async function hfFileSource(uri: string, options: HfSourceOptions = {}): Promise<HfFileTarget> {
  const env = options.env ?? process.env;
  const ref = parseHfRef(uri, options.repoType);
  if (!ref.path) {
    throw new UsageError(`${uri} names a repo, not a file`, { hint: 'use loom pull for a whole repo' });
  }
  if (hubOffline(env)) {
    throw new HubOfflineError(`HF_HUB_OFFLINE is set: not asking the Hub about ${formatHfRef(ref)}`);
  }
  const token = hubToken(options.token, env);
  const api = new HubApi({
    endpoint: options.endpoint ?? hubEndpoint(env),
    token,
    caCertFiles: options.caCertFiles,
    signal: options.signal,
    onRetry: options.onRetry,
  });
  try {
    const meta = await api.fileMeta(ref, ref.revision ?? DEFAULT_REVISION, ref.path);
    return {
      ref,
      path: ref.path,
      url: resolveUrl(api.endpoint, ref, meta.commit, ref.path),
      headers: api.authHeaders(),
      sha256: meta.lfs ? meta.etag : undefined,
      gitSha1: meta.lfs ? undefined : meta.etag,
      etag: meta.etag,
      size: meta.size,
      commit: meta.commit,
    };
  } finally {
    api.close();
  }
}
