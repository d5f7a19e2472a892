// `loom pull`: a whole Hub repo (or the files of it that --include/--exclude pick) at one
// commit. The revision is resolved once; the paginated tree listing names every file with
// the digest the Hub vouches for (LFS sha256, else git sha1), so a file already in the node
// cache is a hit before any request for its bytes. Files go through fetchCached (verified,
// stored once per node), all sharing one pool of requests (file-queue.ts: big files split
// across it, small ones fetched whole in the gaps), and are laid out in the standard HF cache
// (blobs hard-linked from the node cache) or as plain files under --out. The fetch machinery
// loads only when a file is missing: a second pull asks the Hub sooner and never loads it.
import { existsSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';
import { HubOfflineError, UsageError, diskError } from '../core/errors.js';
import type { CacheOutcome } from '../cache/cached-fetch.js';
import { HfRepoCache, hubCacheDir, linkBlobTo } from '../cache/hf-layout.js';
import { DEFAULTS } from '../core/defaults.js';
import type { QueueProgress } from '../fetch/file-queue.js';
import type { FetchOptions } from '../fetch/options.js';
import type { RequestSlots } from '../fetch/request-pool.js';
import { HubApi, type TreeEntry } from '../sources/hf/api.js';
import { hubEndpoint, hubOffline, hubToken } from '../sources/hf/config.js';
import {
  COMMIT_HASH,
  DEFAULT_REVISION,
  formatHfRef,
  parseHfRef,
  resolveUrl,
  type HfRef,
  type HfRepoType,
} from '../sources/hf/uri.js';

/** Engine options for every file; `workers` is the size of the pull's one pool of requests. */
export type PullFetchOptions = Omit<
  FetchOptions,
  'sha256' | 'headers' | 'onProgress' | 'computeSha256' | 'requestPool'
>;

export interface PullParams {
  /** `org/repo[@rev]`, `hf://org/repo[@rev]`, `hf://datasets/org/name[@rev]`. */
  repo: string;
  /** Overrides an @revision in `repo`. Default `main`. */
  revision?: string;
  /** Default `model` (or what the name's `datasets/` prefix says). */
  repoType?: HfRepoType;
  /** Globs of paths to take (default all); `**` crosses directories, a pattern without `/` matches file names. */
  include?: string[];
  /** Globs of paths to leave out. */
  exclude?: string[];
  /** Plain files (hard links) in this directory instead of the HF cache. */
  out?: string;
  /** Default: HF_TOKEN, HF_TOKEN_PATH, $HF_HOME/token. */
  token?: string;
  /** Default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** The HF cache. Default HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub. */
  hubCache?: string;
  /** Loom's node cache root (see fetchCached). */
  cacheDir?: string;
  /** No request to the Hub: serve from the HF cache. Default HF_HUB_OFFLINE. */
  offline?: boolean;
  /** Files in progress at once, at most. Default: the pool's size (fetch.workers). */
  parallelFiles?: number;
  /** Engine options; `workers` is the requests in flight for the whole pull (one pool). */
  fetch?: PullFetchOptions;
  env?: NodeJS.ProcessEnv;
  onStatus?: (message: string) => void;
  /** Called when a file is done. */
  onFile?: (file: PulledFile, progress: { done: number; total: number }) => void;
  /** The whole pull's progress, about ten times a second while bytes move. */
  onProgress?: (progress: PullProgress) => void;
}

/** The whole pull's progress: totals, and each active file's bytes. */
export type PullProgress = QueueProgress;

export type PullOutcome = CacheOutcome | 'present';

export interface PulledFile {
  path: string;
  size: number;
  /** Blob name in the HF cache: the sha256 for LFS files, the git sha1 otherwise. */
  etag: string;
  lfs: boolean;
  /** `present`: already in place (nothing asked); `hit`: from the node cache; `miss`: downloaded. */
  outcome: PullOutcome;
  transferredBytes: number;
  /** Where the file is: the snapshot symlink, or the plain file under --out. */
  location: string;
}

export interface PullResult {
  repo: string;
  repoType: HfRepoType;
  revision: string;
  commit: string;
  /** The snapshot directory (HF cache) or --out. */
  dir: string;
  layout: 'hf-cache' | 'plain';
  files: PulledFile[];
  bytes: number;
  transferredBytes: number;
  seconds: number;
}

interface PlannedFile {
  path: string;
  size: number;
  etag: string;
  sha256: string | undefined;
  gitSha1: string | undefined;
}

/**
 * A glob filter in the spirit of the hf CLI's allow/ignore patterns. picomatch is loaded
 * only when there are patterns: a plain pull (and a second pull above all) starts faster.
 */
export async function pathFilter(
  include: readonly string[] = [],
  exclude: readonly string[] = [],
): Promise<(path: string) => boolean> {
  if (include.length === 0 && exclude.length === 0) return () => true;
  const { default: picomatch } = await import('picomatch');
  const compile = (patterns: readonly string[]): ((path: string) => boolean) => {
    const matchers = patterns.map((raw) => {
      const pattern = raw.endsWith('/') ? `${raw}**` : raw;
      return picomatch(pattern, { dot: true, basename: !pattern.includes('/') });
    });
    return (path) => matchers.some((m) => m(path));
  };
  const included = include.length ? compile(include) : () => true;
  const excluded = exclude.length ? compile(exclude) : () => false;
  return (path) => included(path) && !excluded(path);
}

/** A repo path must stay inside the directory it is joined to. */
function safeJoin(root: string, path: string): string {
  const target = resolve(root, ...path.split('/'));
  if (!target.startsWith(resolve(root) + sep)) {
    throw new UsageError(`the repo names a file outside its directory: ${path}`);
  }
  return target;
}

function planned(entry: TreeEntry): PlannedFile {
  const sha256 = entry.lfs?.oid;
  return {
    path: entry.path,
    size: entry.lfs?.size ?? entry.size,
    etag: sha256 ?? entry.oid,
    sha256,
    gitSha1: sha256 ? undefined : entry.oid,
  };
}

export async function pullRepo(params: PullParams): Promise<PullResult> {
  const started = performance.now();
  const env = params.env ?? process.env;
  const ref: HfRef = parseHfRef(params.repo, params.repoType);
  if (ref.path) {
    throw new UsageError(`${params.repo} names a file, not a repo`, {
      hint: 'use loom fetch hf://… -o FILE for one file, or --include to pick files',
    });
  }
  const revision = params.revision ?? ref.revision ?? DEFAULT_REVISION;
  const repoCache = new HfRepoCache(params.hubCache ?? hubCacheDir(env), ref.repoType, ref.repoId);
  const keep = await pathFilter(params.include, params.exclude);
  const status = params.onStatus ?? (() => undefined);
  const out = params.out;

  if (params.offline ?? hubOffline(env)) {
    return pullOffline({ ref, revision, repoCache, keep, out, started });
  }

  const endpoint = params.endpoint ?? hubEndpoint(env);
  const api = new HubApi({
    endpoint,
    token: hubToken(params.token, env),
    caCertFiles: params.fetch?.caCertFiles,
    signal: params.fetch?.signal,
    onRetry: status,
  });
  let commit: string;
  let files: PlannedFile[];
  try {
    // A revision pulled before names a commit the HF cache knows: its listing is asked for
    // alongside the revision (one round trip instead of two) and used if the revision still
    // names that commit.
    const known = COMMIT_HASH.test(revision) ? revision : repoCache.readRef(revision);
    const guess = known ? api.listTree(ref, known) : undefined;
    guess?.catch(() => undefined);
    commit = await api.resolveRevision(ref, revision);
    const entries = guess && commit === known ? await guess : await api.listTree(ref, commit);
    files = entries.filter((e) => e.type === 'file' && keep(e.path)).map(planned);
  } finally {
    api.close();
  }
  for (const file of files) safeJoin(out ?? repoCache.snapshotDir(commit), file.path);
  if (files.length === 0) {
    const filtered = (params.include?.length ?? 0) + (params.exclude?.length ?? 0) > 0;
    status(
      `${filtered ? 'no file of' : 'the repo'} ${formatHfRef({ ...ref, revision })} ${filtered ? 'matches the filters' : 'has no files'}`,
    );
  }
  const headers = api.authHeaders();
  const base = (file: PlannedFile): Omit<PulledFile, 'outcome' | 'transferredBytes' | 'location'> => ({
    path: file.path,
    size: file.size,
    etag: file.etag,
    lfs: file.sha256 !== undefined,
  });

  // Already in the HF cache (by Loom or the Hub's own clients): trusted as they trust it,
  // and linked into this snapshot without a request or a slot of the pool.
  const results: PulledFile[] = [];
  const toFetch: PlannedFile[] = [];
  for (const file of files) {
    if (!out && repoCache.hasBlob(file.etag, file.size)) {
      const location = await repoCache.linkSnapshot(commit, file.path, file.etag);
      results.push({ ...base(file), outcome: 'present', transferredBytes: 0, location });
    } else {
      toFetch.push(file);
    }
  }
  for (const [i, pulled] of results.entries()) params.onFile?.(pulled, { done: i + 1, total: files.length });
  const done = (pulled: PulledFile[]): Promise<PullResult> =>
    finishPull(pulled, { ref, revision, commit, repoCache, out, started });

  if (toFetch.length === 0) return done(results);
  const [{ fetchCached }, { runFileQueue }, { RequestPool }, { checkGitSha1 }] = await Promise.all([
    import('../cache/cached-fetch.js'),
    import('../fetch/file-queue.js'),
    import('../fetch/request-pool.js'),
    import('./verify.js'),
  ]);
  const pool = new RequestPool(params.fetch?.workers ?? DEFAULTS.workers);
  const fetchOne = async (
    file: PlannedFile,
    { slots, signal, onBytes }: { slots: RequestSlots; signal: AbortSignal; onBytes: (doneBytes: number) => void },
  ): Promise<PulledFile> => {
    const url = resolveUrl(endpoint, ref, commit, file.path);
    // fetchCached checks the bytes (an LFS file's sha256, a small file's git sha1) before they
    // are stored or placed, and places the verified blob itself: a hard link made under a
    // temporary name and renamed into place, the stamp it leaves recorded. Renaming its link
    // again here would move the blob's ctime, and the next hit would rehash it.
    const target = out ? safeJoin(out, file.path) : repoCache.blobPath(file.etag);
    if (out) {
      try {
        await mkdir(dirname(target), { recursive: true });
      } catch (err) {
        throw diskError(err, `creating ${dirname(target)}`);
      }
    } else {
      await repoCache.prepareBlob(file.etag);
    }
    const gitSha1 = file.gitSha1;
    const result = await fetchCached(url, target, {
      ...params.fetch,
      // Every file may use the whole pool: when the others are done, the last one gets it all.
      workers: pool.size,
      requestPool: slots,
      signal,
      sha256: file.sha256,
      // The Hub's digest: bytes that miss it are damaged, and kept nowhere.
      sha256FromSource: true,
      verifyDownload: gitSha1 ? (path) => checkGitSha1(path, file.size, gitSha1, { url, label: file.path }) : undefined,
      headers,
      cacheDir: params.cacheDir,
      // The URL names a commit: its bytes never change, so a cached copy needs no revalidation.
      offline: true,
      onStatus: (message) => status(`${file.path}: ${message}`),
      onProgress: (p) => onBytes(p.doneBytes),
    });
    const location = out ? target : await repoCache.linkSnapshot(commit, file.path, file.etag);
    return { ...base(file), outcome: result.cache, transferredBytes: result.stats.transferredBytes, location };
  };

  const fetched = await runFileQueue(toFetch, {
    pool,
    maxActive: Math.max(1, params.parallelFiles ?? pool.size),
    signal: params.fetch?.signal,
    run: fetchOne,
    alreadyDone: { files: results.length, bytes: results.reduce((sum, f) => sum + f.size, 0) },
    onDone: (_file, pulled, { done }) => params.onFile?.(pulled, { done: results.length + done, total: files.length }),
    onProgress: params.onProgress,
  });
  results.push(...fetched);
  return done(results);
}

/** The pull's snapshot folder, ref and summary, once every file is in place. */
async function finishPull(
  results: PulledFile[],
  ctx: {
    ref: HfRef;
    revision: string;
    commit: string;
    repoCache: HfRepoCache;
    out: string | undefined;
    started: number;
  },
): Promise<PullResult> {
  const { ref, revision, commit, repoCache, out } = ctx;
  // The folder the pull names exists even when no file landed in it (nothing matched), so a
  // script can cd into it and an offline pull finds the snapshot.
  const dir = out ?? repoCache.snapshotDir(commit);
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    throw diskError(err, `creating ${dir}`);
  }
  if (!out) await repoCache.writeRef(revision, commit);
  // By code point, as git lists paths: the same order in every locale, and without the
  // ~7 ms localeCompare spends loading ICU's collator (a second pull is mostly start-up).
  results.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return {
    repo: ref.repoId,
    repoType: ref.repoType,
    revision,
    commit,
    dir,
    layout: out ? 'plain' : 'hf-cache',
    files: results,
    bytes: results.reduce((sum, f) => sum + f.size, 0),
    transferredBytes: results.reduce((sum, f) => sum + f.transferredBytes, 0),
    seconds: (performance.now() - ctx.started) / 1000,
  };
}

/** HF_HUB_OFFLINE: the revision and its files from the HF cache, no request at all. */
async function pullOffline(ctx: {
  ref: HfRef;
  revision: string;
  repoCache: HfRepoCache;
  keep: (path: string) => boolean;
  out: string | undefined;
  started: number;
}): Promise<PullResult> {
  const { ref, revision, repoCache, keep, out } = ctx;
  const commit = COMMIT_HASH.test(revision) ? revision : repoCache.readRef(revision);
  const paths = commit ? await repoCache.snapshotFiles(commit) : undefined;
  if (!commit || !paths) {
    throw new HubOfflineError(
      `HF_HUB_OFFLINE is set and ${formatHfRef({ ...ref, revision })} is not in ${repoCache.hubCache}`,
      {
        hint: 'pull it once with network access, or unset HF_HUB_OFFLINE',
      },
    );
  }
  const files: PulledFile[] = [];
  for (const path of paths.filter(keep)) {
    const pointer = repoCache.pointerPath(commit, path);
    if (!existsSync(pointer)) {
      throw new HubOfflineError(`HF_HUB_OFFLINE is set and ${path} of ${ref.repoId} is missing from the HF cache`);
    }
    const blob = repoCache.resolvePointer(commit, path);
    const size = statSync(blob).size;
    let location = pointer;
    if (out) {
      location = safeJoin(out, path);
      await mkdir(dirname(location), { recursive: true }).catch((err: unknown) => {
        throw diskError(err, `linking ${location}`);
      });
      await linkBlobTo(blob, location);
    }
    const etag = blob.split(sep).pop()!;
    files.push({ path, size, etag, lfs: etag.length === 64, outcome: 'present', transferredBytes: 0, location });
  }
  return {
    repo: ref.repoId,
    repoType: ref.repoType,
    revision,
    commit,
    dir: out ?? repoCache.snapshotDir(commit),
    layout: out ? 'plain' : 'hf-cache',
    files,
    bytes: files.reduce((sum, f) => sum + f.size, 0),
    transferredBytes: 0,
    seconds: (performance.now() - ctx.started) / 1000,
  };
}
