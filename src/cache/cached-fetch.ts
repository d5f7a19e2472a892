// fetchFile through the node's content-addressable cache: a fresh hit is a hard link
// (milliseconds, whatever the size); a miss downloads once per node (single flight), hashes
// while writing, and stores the blob by its sha256 before linking it to the output path.
// When the cache itself cannot be used, the download goes straight to the output path.
// A download that does not match the caller's --sha256 is still what the origin serves: it is
// kept in the cache (never at the output), so a process waiting for the same URL takes it,
// or fails at once if it is pinned to another digest, instead of downloading it again.
// A hit is served from its hint file when it can be; SQLite and the engine load only when
// the hint cannot answer.
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import { CacheError, DigestMismatchError, DiskAccessError, DiskFullError, LoomError } from '../core/errors.js';
import type { BlobDownloadResult, DownloadResult, DownloadTrail } from '../fetch/download.js';
import type { DownloadPlanner, PlannedDownload } from './download-planner.js';
import type { PlanSpill } from './planned-download.js';
import type { Manifest } from '../core/manifest.js';
import { emptyStats, type DownloadStats } from '../fetch/stats.js';
import type { FetchResult } from '../fetch/fetch-file.js';
import { hasValidator, journalIdentity } from '../fetch/journal.js';
import { resolveFetchOptions, sourceOptionsOf, type FetchOptions } from '../fetch/options.js';
import { sourceFor } from '../sources/index.js';
import type { Validator } from '../sources/source.js';
import type { Materialization } from './blob-store.js';
import { blobPath, resolveCacheRoot } from './cache-root.js';
import { isFresh, isOriginRefusal, type FreshnessCheck } from './freshness.js';
import { NodeCache, type CachedCopy, type Claim, type OpenNodeCache } from './node-cache.js';
import { cacheKey } from './source-key.js';
import { DEFAULTS } from '../core/defaults.js';
import { formatBytes } from '../core/units.js';
import { envFlag } from '../core/validate.js';

export interface CacheOptions {
  /** Cache root. Default: LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else ~/.cache/loom. */
  cacheDir?: string;
  /** Serve a cached copy without asking the origin. Default: LOOM_OFFLINE=1 (or true, yes, on). */
  offline?: boolean;
  /** How long the freshness check may take before the cached copy is served. Default DEFAULTS.cache. */
  revalidateTimeoutMs?: number;
  /** Human status lines (waiting for another process, cache unusable, stale copy served). */
  onStatus?: (message: string) => void;
  /**
   * "cache unusable …: downloading straight to OUT": the cache (and the fleet) bypassed, said
   * even where status lines are not (--json), since the fetch still succeeds. Default: onStatus.
   */
  onWarning?: (message: string) => void;
  /** Other nodes to take the bytes from (src/peer/peer-download.ts). Default: none. */
  planner?: DownloadPlanner;
  /**
   * The expected sha256 is the source's own (the Hub's listing), not a caller's pin: bytes
   * that do not match it are damaged, and are not kept in the cache. Default false: a
   * download that does not match the caller's `sha256` is kept there as what the URL serves.
   */
  sha256FromSource?: boolean;
  /**
   * A check of a new download's bytes (the Hub's git sha1 of a small file), run on the
   * finished file before it enters the cache or reaches `out`: bytes that fail it are kept
   * nowhere, and the index records only what passed, so a hit needs no check again.
   */
  verifyDownload?: (path: string) => Promise<void>;
}

export type CacheOutcome = 'hit' | 'miss' | 'bypass';

export interface CachedFetchResult extends FetchResult {
  cache: CacheOutcome;
  /** How the blob reached the output path (hits and misses). */
  materialization: Materialization | undefined;
  /**
   * True when this process waited for another one on this node downloading it: a hit that
   * process finished, or a miss this one took over when it died or failed.
   */
  waited: boolean;
  /**
   * Why the download went straight to the output (cache 'bypass'), and the bytes it had
   * downloaded into the cache before its disk filled up, moved to the output's part.
   */
  bypassed?: { reason: string; movedBytes: number };
}

export async function fetchCached(
  url: string,
  out: string,
  options: FetchOptions & CacheOptions = {},
): Promise<CachedFetchResult> {
  const {
    cacheDir,
    offline,
    revalidateTimeoutMs,
    onStatus,
    onWarning,
    planner,
    sha256FromSource,
    verifyDownload,
    ...fetchOptions
  } = options;
  const resolved = resolveFetchOptions(fetchOptions);
  const started = performance.now();
  const key = cacheKey(url, resolved.headers);
  const status = onStatus ?? (() => undefined);
  const warn = onWarning ?? status;
  const node = new NodeCache(resolveCacheRoot(cacheDir), status);
  const source = sourceFor(url, sourceOptionsOf(resolved));
  const freshness: FreshnessCheck = {
    offline: offline ?? envFlag(process.env.LOOM_OFFLINE),
    timeoutMs: revalidateTimeoutMs ?? DEFAULTS.cache.revalidateTimeoutMs,
    status,
    signal: resolved.signal,
  };
  const result = (
    fields: Omit<CachedFetchResult, 'path' | 'url' | 'seconds' | 'finalUrl' | 'stats'> & {
      stats?: DownloadStats;
      finalUrl?: string;
    },
  ): CachedFetchResult => ({
    path: out,
    url: source.url,
    finalUrl: fields.finalUrl ?? source.url,
    seconds: (performance.now() - started) / 1000,
    stats: fields.stats ?? emptyStats(),
    ...fields,
  });
  const hit = (
    entry: { digest: string; size: number; validator: Validator },
    materialization: Materialization,
    waited: boolean,
  ) =>
    result({
      cache: 'hit',
      materialization,
      waited,
      size: entry.size,
      sha256: entry.digest,
      validator: entry.validator,
    });

  // The validator the origin has just said is out of date: not asked about a second time.
  let staleValidator: Validator | undefined;
  try {
    // The common case first, without SQLite: a hint names the blob and the origin confirms it.
    const hinted = node.lookupHint(key, resolved.expectedSha256);
    if (hinted) {
      if (resolved.expectedSha256 !== undefined || (await isFresh(hinted.validator, source, freshness))) {
        const materialization = await node.place(hinted, out);
        source.close();
        return hit(hinted, materialization, false);
      }
      staleValidator = hinted.validator;
    }
  } catch (err) {
    if (resolved.signal?.aborted || isOriginRefusal(err)) {
      source.close();
      throw err;
    }
    // Anything amiss with the hint: the index below decides.
  }

  let cache: OpenNodeCache;
  try {
    cache = await node.open();
  } catch (err) {
    source.close();
    const reason = `cache unusable (${(err as Error).message})`;
    warn(`${reason}; downloading straight to ${out}`);
    return bypass(url, out, fetchOptions, { verifyDownload, started, reason });
  }

  // Set when the cache's disk fills up under this download (its lock still held: see below).
  let spill: Spill | undefined;
  // Waited for another process, even when it then died or failed and this one took over (or
  // went straight to --out).
  let waited = false;
  const serve = async (copy: CachedCopy, waited: boolean) => hit(copy, await cache.place(copy, out), waited);
  // What another process downloaded while this one waited: the digest asked for, or an error.
  const serveWaited = (entry: CachedCopy) => {
    const expected = resolved.expectedSha256;
    if (expected !== undefined && entry.digest !== expected) {
      throw new DigestMismatchError(
        `sha256 mismatch for ${source.url}: expected ${expected}, got ${entry.digest} (downloaded just now by another process on this node)`,
        { url: source.url, expected, actual: entry.digest },
      );
    }
    return serve(entry, true);
  };

  try {
    const expected = resolved.expectedSha256;
    // A digest the fleet records for this source: its blob may be here already (another URL).
    const known = expected ?? (planner ? await planner.knownDigest(url) : undefined);
    if (known) {
      const blob = await cache.lookupBlob(known, key);
      if (blob) return await serve(blob, false);
    }

    // The row as this process judges it: any other row found later was recorded by another
    // process's download since, and is taken instead of downloading again.
    const seen = await cache.lookup(key);
    const cached = seen.copy;
    // A cached copy of other bytes than the digest asked for is not an answer: download and verify.
    if (
      cached &&
      (expected === undefined || cached.digest === expected) &&
      !sameValidator(cached.validator, staleValidator) &&
      (await isFresh(cached.validator, source, freshness))
    ) {
      return await serve(cached, false);
    }

    // A miss: load the download engine and the lock (a hit never pays for them).
    const { discardPart, downloadToPart } = await import('../fetch/download.js');
    // A download that resumed a partial with no validator to tell it is of the same version.
    const resumedUnvalidated = (done: DownloadResult | BlobDownloadResult) =>
      done.stats.resumedBytes > 0 && !hasValidator(done.validator);
    let lock: Claim | 'done';
    for (;;) {
      lock = await cache.claim(key, {
        signal: resolved.signal,
        onWait: () => {
          waited = true;
          status('waiting for another process on this node that is downloading it');
        },
        onOwnerGone: (pid) =>
          status(`the process that was downloading it (pid ${pid}) is gone; taking over its partial`),
        onOwnerFailed: (pid, message) =>
          status(`the process that was downloading it (pid ${pid}) failed (${message}); downloading it here`),
        isDone: async () => (await cache.recordedSince(key, seen)) !== undefined,
      });
      if (lock !== 'done') break;
      // Unless it was removed since (gc), between the two looks.
      const finished = await cache.recordedSince(key, seen);
      if (finished) return await serveWaited(finished);
    }

    let download: DownloadResult | BlobDownloadResult;
    let admitted: CachedCopy;
    // The part file a download from the origin leaves for admit to store (a planned
    // download stores its blob itself), and what that download did if it fails.
    let part: string | undefined;
    const trail: DownloadTrail = { stats: emptyStats() };
    // A planned download's verified pieces, kept (under its id's lock) when the disk filled.
    let planSpill: PlanSpill | undefined;
    // The origin's bytes after a failed plan, once checked against the pin: their manifest
    // goes to the fleet (a forged one for the pin is dropped once enough nodes report it).
    let verifiedManifest: { plan: PlannedDownload; manifest: Manifest } | undefined;
    // The caller's pin is checked here, not by the engine (which removes bytes that miss it):
    // the download is kept as what the URL serves, for the processes waiting for it.
    const checkPinHere = expected !== undefined && !sha256FromSource;
    try {
      const signal = resolved.signal ? AbortSignal.any([resolved.signal, lock.lost]) : lock.lost;
      const fromOrigin = async (produceManifest = false): Promise<DownloadResult | BlobDownloadResult> => {
        part = lock.part;
        const engineExpects = checkPinHere ? undefined : expected;
        return downloadToPart(source, part, {
          ...resolved,
          expectedSha256: engineExpects,
          journalSha256: checkPinHere ? expected : undefined,
          computeSha256: true,
          produceManifest,
          signal,
          trail,
        });
      };
      const plan = planner ? await planner.plan({ url, origin: source, pinned: expected, signal }) : undefined;
      if (plan) {
        const { downloadWithPlan } = await import('./planned-download.js');
        // The cache's disk full under it: its verified pieces may go on to --out (see the
        // catch below) as a download from the origin does, if --out's download can resume
        // them: it names the blob by digest, or knows the origin's validator to compare.
        const onDiskFull = (taken: PlanSpill): boolean => {
          if (!expected && !hasValidator(taken.partial.validator)) return false;
          planSpill = taken;
          return true;
        };
        try {
          download = await downloadWithPlan(
            cache.layout,
            plan,
            { ...resolved, computeSha256: true, signal, url },
            onDiskFull,
          );
        } catch (err) {
          const mismatch = (err as LoomError).code === 'LOOM_ERR_DIGEST_MISMATCH';
          // Nothing more goes into a full cache: not the origin's bytes, not another plan's.
          if (planSpill || (err as LoomError).code === 'LOOM_ERR_DISK_FULL') throw err;
          if (plan.originOnFailure && !signal.aborted) {
            // Peers' bytes checked only as a whole failed: the origin's are had alone.
            status(`${(err as Error).message}; fetching it from the origin alone`);
            download = await fromOrigin(expected !== undefined && plan.originVerified !== undefined);
            const manifest = 'manifest' in download ? download.manifest : undefined;
            if (manifest && manifest.digest === expected) verifiedManifest = { plan, manifest };
          } else {
            // A follower whose leader finished (or vanished) between two looks: ask the fleet
            // once more; it now knows the blob, or hands this node the lease.
            if (!plan.replanOnFailure || signal.aborted || mismatch) throw err;
            status(`${(err as Error).message}; asking the fleet again`);
            const again = await planner!.plan({ url, origin: source, pinned: expected, signal });
            download = again
              ? await downloadWithPlan(cache.layout, again, { ...resolved, computeSha256: true, signal, url })
              : await fromOrigin();
          }
        }
      } else {
        download = await fromOrigin();
      }
      if (verifyDownload) {
        // A planned download stored its blob itself: one that fails stays unindexed (gc's).
        const path = part ?? blobPath(cache.layout, download.sha256!);
        await verifyDownload(path).catch(async (err: unknown) => {
          if (part !== undefined) await discardPart(part);
          throw err;
        });
      }
      if (checkPinHere && part !== undefined && download.sha256 !== expected && resumedUnvalidated(download)) {
        // A partial resumed without a validator (journal.ts) may mix two versions: not what
        // the origin serves, so not kept for anyone.
        await discardPart(part);
        throw new DigestMismatchError(
          `sha256 mismatch for ${source.url}: expected ${expected}, got ${download.sha256}`,
          {
            url: source.url,
            expected,
            actual: download.sha256,
            hint: `nothing was kept: the download resumed a partial file and the origin sends no ETag or Last-Modified, so it may mix two versions`,
          },
        );
      }
      admitted = await cache.admit(key, { ...download, sha256: download.sha256! }, part);
      if (checkPinHere && admitted.digest !== expected) {
        throw new DigestMismatchError(
          `sha256 mismatch for ${source.url}: expected ${expected}, got ${admitted.digest}`,
          {
            url: source.url,
            expected,
            actual: admitted.digest,
            hint: `nothing was written to ${out}; the node cache keeps the download as what the origin serves`,
          },
        );
      }
    } catch (err) {
      lock.recordFailure(failureReason(err));
      if (fullCacheDiskOnly(err, cache.root, out)) {
        const reason = `cache unusable (${failureReason(err)})`;
        const identity = journalIdentity(expected, source.url);
        if (part !== undefined) {
          // The download goes on at `out`, with the bytes it has: moved while the lock is
          // held, so that no waiter takes over the partial meanwhile (bypass releases it).
          spill = { reason, part, trail, identity, release: () => lock.release() };
        } else if (planSpill) {
          // Its verified pieces only; the id's lock too is held until they are moved.
          const taken = planSpill;
          spill = {
            reason,
            part: taken.part,
            trail: { ...taken.trail, partial: taken.partial },
            identity,
            release: async () => {
              await taken.release();
              await lock.release();
            },
          };
        }
      }
      throw err;
    } finally {
      if (!spill) {
        await planSpill?.release();
        await lock.release();
      }
    }
    if (verifiedManifest && admitted.digest === expected) {
      const { keepManifest } = await import('./planned-download.js');
      keepManifest(cache.layout, verifiedManifest, verifiedManifest.plan.verifiedAgainst);
      await verifiedManifest.plan.originVerified?.(verifiedManifest.manifest);
    }
    const materialization = await cache.place(admitted, out);
    return result({ ...download, cache: 'miss', materialization, waited });
  } catch (err) {
    const sharedFull = fullDiskSharedWithOut(err, cache.root, out);
    if (sharedFull) throw sharedFull;
    if (spill)
      return bypass(url, out, fetchOptions, {
        verifyDownload,
        started,
        reason: spill.reason,
        spill,
        status: warn,
        waited,
      });
    if (isCacheSideFailure(err, cache.root)) {
      const reason = `cache unusable (${(err as Error).message})`;
      warn(`${reason}; downloading straight to ${out}`);
      return bypass(url, out, fetchOptions, { verifyDownload, started, reason, waited });
    }
    throw err;
  } finally {
    source.close();
    cache.close();
  }
}

/** How a waiter is told why this process gave up the download: the message without its hint (meant for this user). */
function failureReason(err: unknown): string {
  if (err instanceof LoomError && err.hint && err.message.endsWith(`; ${err.hint}`)) {
    return err.message.slice(0, -(err.hint.length + 2));
  }
  return err instanceof Error ? err.message : String(err);
}

function sameValidator(a: Validator, b: Validator | undefined): boolean {
  return b !== undefined && a.etag === b.etag && a.lastModified === b.lastModified;
}

/** A download from the origin that the cache's full disk stopped, to go on at the output. */
interface Spill {
  reason: string;
  /** Its part file in the cache's tmp/. */
  part: string;
  trail: DownloadTrail;
  /** The journal identity the download straight to the output computes. */
  identity: string;
  /** Lets the source's lock go (held until the partial is moved). */
  release(): Promise<void>;
}

interface BypassContext {
  verifyDownload: ((path: string) => Promise<void>) | undefined;
  /** When fetchCached started: the result's time is the whole fetch's, not the bypass's. */
  started: number;
  reason: string;
  spill?: Spill;
  status?: (message: string) => void;
  /** This process waited for another one's download before it went straight to `out`. */
  waited?: boolean;
}

/**
 * The download straight to `out`. After a spill the bytes the cache's partial holds are moved
 * to `out`'s part first (under its lock), so they are not fetched again, and the result
 * counts both attempts: their time, requests and bytes from the origin.
 */
async function bypass(
  url: string,
  out: string,
  options: FetchOptions,
  context: BypassContext,
): Promise<CachedFetchResult> {
  const { spill, started, reason } = context;
  let movedBytes = 0;
  const prepare =
    spill &&
    (async (part: string): Promise<void> => {
      try {
        const { movePartial } = await import('../fetch/part-move.js');
        const { discardPart } = await import('../fetch/download.js');
        const partial = spill.trail.partial;
        if (partial && partial.ranges.length > 0)
          movedBytes = await movePartial(spill.part, part, partial, spill.identity);
        else await discardPart(spill.part);
      } finally {
        await spill.release();
      }
      context.status?.(
        movedBytes > 0
          ? `${reason}; moved the ${formatBytes(movedBytes)} downloaded so far to ${part} and going on straight to ${out}`
          : `${reason}; downloading straight to ${out}`,
      );
    });
  let direct: FetchResult;
  try {
    // Hashed as a download into the cache would be: the summary names the digest either way.
    direct = await fetchStraight(url, out, { ...options, computeSha256: true }, context.verifyDownload, prepare);
  } finally {
    await spill?.release();
  }
  const first = spill?.trail.stats;
  const stats = first
    ? {
        ...direct.stats,
        transferredBytes: first.transferredBytes + direct.stats.transferredBytes,
        // Only what the first attempt found from an earlier run: the moved bytes are this run's.
        resumedBytes: first.resumedBytes,
        requests: first.requests + direct.stats.requests,
        retries: first.retries + direct.stats.retries,
        restarts: first.restarts + direct.stats.restarts,
        splits: first.splits + direct.stats.splits,
        hashedBytes: first.hashedBytes + direct.stats.hashedBytes,
      }
    : direct.stats;
  const bySource = (direct as FetchResult & { bytesBySource?: Record<string, number> }).bytesBySource;
  // A planned download's first attempt names its sources (peers and the origin).
  const firstBySource = spill?.trail.bytesBySource ?? (first && { origin: first.transferredBytes });
  return {
    ...direct,
    ...(bySource && firstBySource ? { bytesBySource: addBySource(bySource, firstBySource) } : {}),
    stats,
    seconds: (performance.now() - started) / 1000,
    cache: 'bypass',
    materialization: undefined,
    waited: context.waited ?? false,
    bypassed: { reason, movedBytes },
  };
}

function addBySource(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const sum = { ...a };
  for (const [id, bytes] of Object.entries(b)) sum[id] = (sum[id] ?? 0) + bytes;
  return sum;
}

async function fetchStraight(
  url: string,
  out: string,
  options: FetchOptions,
  verifyDownload: ((path: string) => Promise<void>) | undefined,
  prepare: ((part: string) => Promise<void>) | undefined,
): Promise<FetchResult> {
  const { fetchFile, fetchFileChecked } = await import('../fetch/fetch-file.js');
  return verifyDownload
    ? fetchFileChecked(url, out, options, verifyDownload, prepare)
    : fetchFile(url, out, options, prepare);
}

/**
 * Whether a full disk under the cache is also the output's: true, false, or undefined when
 * the error is not the cache's full disk or either folder cannot be read. The output's
 * folder is stat'ed as written, as the kernel reads it: resolve() would drop `a/..` where
 * `a` is a symbolic link, and name a folder on another disk (or none).
 */
function cacheFullDiskHoldsOut(err: unknown, root: string, out: string): boolean | undefined {
  if (!(err instanceof DiskFullError) || !err.path?.startsWith(root)) return undefined;
  try {
    return statSync(root).dev === statSync(dirname(out)).dev;
  } catch {
    return undefined;
  }
}

/**
 * A full disk under the cache only: the output is on another file system, where the
 * download can go on.
 */
function fullCacheDiskOnly(err: unknown, root: string, out: string): boolean {
  return cacheFullDiskHoldsOut(err, root, out) === false;
}

/**
 * A full disk under the cache that also holds the output: a download straight to the output
 * would fail the same way after fetching the same bytes again, so the error is final.
 */
function fullDiskSharedWithOut(err: unknown, root: string, out: string): DiskFullError | undefined {
  if (cacheFullDiskHoldsOut(err, root, out) !== true) return undefined;
  const full = err as DiskFullError;
  return new DiskFullError(`the file system holding both the cache ${root} and ${out} is full (${full.message})`, {
    path: full.path,
    cause: full,
  });
}

/** Failures of the cache's own disk or locks, after which a direct download can still work. */
function isCacheSideFailure(err: unknown, root: string): boolean {
  if (err instanceof CacheError) return true;
  if (err instanceof DiskFullError || err instanceof DiskAccessError) {
    return (err as LoomError).path?.startsWith(root) ?? false;
  }
  return false;
}
