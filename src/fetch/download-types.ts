// The engine's public shapes: what a download is asked (DownloadOptions, BlobDownloadParams),
// what it reports while it runs (FetchProgress) and what it returns. download.ts re-exports
// them; the modules of the engine that only need the shapes import them from here.
import type { LoomError } from '../core/errors.js';
import type { Manifest } from '../core/manifest.js';
import type { Validator } from '../sources/source.js';
import type { JournalSnapshot } from './journal.js';
import type { Preallocation } from './part-file.js';
import type { RequestSlots } from './request-pool.js';
import type { RetryOptions } from './retry-policy.js';
import type { DroppedSource, SourceSlot } from './source-set.js';
import type { DownloadStats } from './stats.js';

/** A snapshot of a running download, for progress bars and logs. */
export interface FetchProgress {
  /** Total size in bytes; undefined until known (a stream without a length). */
  totalBytes: number | undefined;
  /** Bytes on disk, resumed ones included. */
  doneBytes: number;
  /** Bytes received over the network in this run. */
  transferredBytes: number;
  /** Requests with a response open right now. */
  activeRequests: number;
  retries: number;
  /** Bytes from 0 on disk without a gap: what can already be read in order. */
  contiguousBytes: number;
  /** False once the server turned out to ignore Range: one stream, nothing to resume. */
  resumable: boolean;
  /** Ranges waiting to be tried again right now; undefined when none is. */
  retrying: RetryWait | undefined;
}

/** The ranges waiting for their next attempt, as a progress display says it. */
export interface RetryWait {
  ranges: number;
  /** Why the latest one failed, short: `503`, `ECONNRESET`, `stalled`. */
  reason: string;
  /** Until the soonest of them is tried again. */
  nextInMs: number;
}

export interface DownloadResult {
  size: number;
  /** Hex sha256 of the whole file, when it was asked for (expected, computeSha256, a manifest). */
  sha256: string | undefined;
  validator: Validator;
  finalUrl: string;
  stats: DownloadStats;
}

export interface DownloadOptions {
  /** Requests in flight to a single origin (downloadToPart). */
  workers: number;
  chunkSize: number;
  /** Largest single request; undefined = a chunk. */
  maxRequestSize: number | undefined;
  minSplitSize: number;
  retry: RetryOptions;
  /** The file's sha256 must equal this (lower-case hex). */
  expectedSha256: string | undefined;
  /**
   * A digest the caller checks after the download (the node cache's --sha256 pin, checked
   * there so a download that misses it is still kept): keys the resume journal by it, so a
   * re-signed URL of the same object resumes; the engine does not check the bytes against it.
   */
  journalSha256?: string | undefined;
  /** Hash even without an expected digest (the cache needs the digest). */
  computeSha256: boolean;
  journalIntervalMs: number;
  preallocation: Preallocation;
  /** Start over once when the file changes mid-download, instead of failing. */
  restartOnChange: boolean;
  /** fdatasync before reporting success, so a power cut cannot leave a torn file. */
  fsync: boolean;
  signal: AbortSignal | undefined;
  onProgress: ((progress: FetchProgress) => void) | undefined;
  /**
   * Slots shared with other downloads (a pull's one pool): every request this download
   * runs holds one, so `workers` is its most and the pool's size the total. Default: none.
   */
  requestSlots?: RequestSlots | undefined;
}

export interface BlobDownloadParams extends DownloadOptions {
  /** At least one; more may be added while running (BlobDownloadHandle.addSource). */
  sources: SourceSlot[];
  /**
   * What the download is of, as the caller's user named it: its errors name this URL. A
   * download from peers alone (`--no-origin`) has no origin source to name, and a peer's blob
   * URL is not what the user asked for. Default: the origin source's URL, else the first one's.
   */
  url?: string;
  partPath: string;
  /**
   * Known identity: size and digest (pinned, Hub, control plane), optional trusted manifest.
   * `pinned`: the sha256 comes from the user or the source, not from whoever published the
   * manifest, so the whole file is hashed and checked against it even when every piece
   * matched the manifest (a manifest forged for that digest cannot pass).
   */
  expected?: { sha256?: string; size?: number; manifest?: Manifest; pinned?: boolean };
  /** Produce the manifest (piece digests) as the download goes (cache on, peers). */
  produceManifest: boolean;
  /**
   * After piece `index`'s bytes are on disk and checked against the manifest, or (without
   * one) hashed into the finished prefix; `digest` is the piece's sha256.
   */
  onPieceVerified?(index: number, digest: string): void;
  /** A source was dropped for this download: bad bytes, dead, far too slow. */
  onSourceDropped?(id: string, reason: LoomError): void;
  /**
   * Without a manifest: the sha256 piece `index` must have when some of its bytes came from
   * a peer (or from an earlier run), resolved once it is known (a follower asks for the
   * digests the lease holder publishes as it hashes). Until then the piece waits: it is not
   * hashed into the whole-file digest nor reported verified. A mismatch takes the piece off
   * the part file, drops the source that sent it and refetches it; `undefined` (no digest
   * will come) refetches it without blame. Pieces only the origin wrote in this run count
   * without it. Absent: every piece counts as the prefix passes it.
   */
  pieceDigest?(index: number, layout: { size: number; pieceSize: number }): Promise<string | undefined>;
  /**
   * With pieceDigest and no expected sha256: the file's digest from the digests of all its
   * pieces, as judged and counted: a digest D when the caller holds a trusted manifest bound
   * to D that lists exactly these pieces (what a download with that manifest trusts), else
   * undefined. Given, the prefix hasher digests the pieces only, and the whole file is hashed
   * (a second pass) only when this answers undefined.
   */
  digestFromPieces?(pieces: string[], layout: { size: number; pieceSize: number }): Promise<string | undefined>;
  /**
   * How long a download with work left but no source able to serve it waits for one (a
   * peer's has() turning true, addSource) before failing with NoSourceError. Default 0. A
   * function is asked again at each check: the wait can end early once the caller knows no
   * source will come (the peer everyone waited on is gone).
   */
  sourceWaitMs?: number | (() => number);
  /** Filled in as the download goes, for a caller that carries on after it fails (DownloadTrail). */
  trail?: DownloadTrail;
}

/**
 * What a download leaves for its caller when it fails: its counters, and the ranges on the
 * part file when it stopped (every write that completed, whether or not a journal said so
 * yet). The node cache reads it when its disk fills up, to move those bytes to --out and
 * report the whole fetch (src/cache/cached-fetch.ts).
 */
export interface DownloadTrail {
  stats: DownloadStats;
  partial?: JournalSnapshot;
  /** Body bytes written from each source id (as BlobDownloadResult's). */
  bytesBySource?: Record<string, number>;
}

export interface BlobDownloadResult extends DownloadResult {
  /** The trusted manifest used, or the one produced (produceManifest); else undefined. */
  manifest: Manifest | undefined;
  /** Body bytes written from each source id in this run. */
  bytesBySource: Record<string, number>;
  droppedSources: DroppedSource[];
}

/** A running downloadBlob. */
export interface BlobDownloadHandle {
  readonly result: Promise<BlobDownloadResult>;
  /** Adds a source while running (a peer that now has pieces); its workers start at once. */
  addSource(slot: SourceSlot): void;
}
