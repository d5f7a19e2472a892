// Downloads one blob into a part file from a set of sources: learns the size (from what is
// expected, else one probe), plans ranges in file order, runs each source's workers, checks
// every piece (against a trusted manifest, else the whole-file sha256 over the finished
// prefix), and keeps a resume journal. It never renames anything; the caller decides where
// a finished, verified file goes (the output path, or the cache's blob store).
//
// The parts live beside it: sources and their health (source-set.ts), writing one response
// (range-pump.ts, into slabs: slab-writer.ts, slab-sink.ts), the retry budget
// (retry-budget.ts), piece checks (piece-verifier.ts, prefix-hasher.ts, hash-thread.ts),
// the plan (scheduler.ts) and the journal (journal.ts).
import { setMaxListeners } from 'node:events';
import { rm } from 'node:fs/promises';
import {
  AbortedError,
  cancelled,
  BadResponseError,
  DigestMismatchError,
  HttpStatusError,
  LoomError,
  NoSourceError,
  SourceChangedError,
  StallError,
  UsageError,
} from '../core/errors.js';
import { DEFAULTS } from '../core/defaults.js';
import { isValidManifest, pieceCount, pieceRange, pieceSizeFor, type Manifest } from '../core/manifest.js';
import {
  discardBody,
  type ProbeExpectation,
  type ProbeResult,
  type RangeBody,
  type Validator,
} from '../sources/source.js';
import {
  JournalKeeper,
  journalIdentity,
  journalMatches,
  journalPathFor,
  readJournal,
  removeJournal,
  type JournalSource,
  type JournalState,
} from './journal.js';
import { PartFile, type Preallocation } from './part-file.js';
import { PieceLedger } from './piece-verifier.js';
import { ThreadedPrefixHasher } from './hash-thread.js';
import { PrefixHasher, type FinishedPrefixHasher, type PieceDigests, type PieceVerdict } from './prefix-hasher.js';
import { pump } from './range-pump.js';
import { RangeSet } from './range-set.js';
import type { RequestSlot, RequestSlots } from './request-pool.js';
import { decideAfterFailure, withoutResume } from './retry-budget.js';
import { waitBeforeRetry, type RetryOptions } from './retry-policy.js';
import { clientLoadMonitor, RangeTask, Scheduler } from './scheduler.js';
import { slabPoolFor, type SlabPool } from './slab-pool.js';
import { PACE_WINDOW_MS, SourceSet, type DroppedSource, type SourceSlot, type SourceState } from './source-set.js';
import { emptyStats, type DownloadStats } from './stats.js';

export type { SourceSlot, DroppedSource } from './source-set.js';

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

/** A failure in a few characters, for "retrying 3 ranges: 503". */
function shortReason(err: unknown): string {
  if (err instanceof HttpStatusError && err.status !== undefined) return String(err.status);
  if (err instanceof StallError) return 'stalled';
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  if (err instanceof BadResponseError) return 'bad response';
  return 'network error';
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
  partPath: string;
  /** Known identity: size and digest (pinned, Hub, control plane), optional trusted manifest. */
  expected?: { sha256?: string; size?: number; manifest?: Manifest };
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
   * How long a download with work left but no source able to serve it waits for one (a
   * peer's has() turning true, addSource) before failing with NoSourceError. Default 0.
   */
  sourceWaitMs?: number;
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

const PROGRESS_INTERVAL_MS = 100;
const NOT_RESUMABLE = 'the server does not support ranges, so nothing was kept: a rerun starts over';
const PROBE_SIZE = 1024 * 1024;
const BACKGROUND_SYNC_BYTES = 128 * 1024 * 1024;
/** From this size on the sha256 runs on a worker thread. */
const HASH_THREAD_MIN_SIZE = 64 * 1024 * 1024;
/** Below this first-byte latency a request's round trip is not worth hiding. */
const EARLY_OPEN_MIN_LATENCY_MS = 20;

/** Starts downloading one blob from `params.sources`; see BlobDownloadHandle. */
export function startBlobDownload(params: BlobDownloadParams): BlobDownloadHandle {
  let download: BlobDownload;
  try {
    download = new BlobDownload(params, emptyStats());
  } catch (err) {
    // Bad parameters reject like any other failure of the download.
    return { result: Promise.reject(err as Error), addSource: () => undefined };
  }
  return { result: download.run(), addSource: (slot) => download.addSource(slot) };
}

/** Downloads one blob from many sources into `params.partPath`. */
export function downloadBlob(params: BlobDownloadParams): Promise<BlobDownloadResult> {
  return startBlobDownload(params).result;
}

/** One origin, one part file: the CLI's and the cache's download. Starts over once on a change. */
export async function downloadToPart(
  source: SourceSlot['source'],
  partPath: string,
  options: DownloadOptions & { produceManifest?: boolean },
): Promise<BlobDownloadResult> {
  const stats = emptyStats();
  const params: BlobDownloadParams = {
    ...options,
    sources: [{ id: 'origin', kind: 'origin', source, maxConcurrency: options.workers, preference: 1 }],
    partPath,
    expected: options.expectedSha256 ? { sha256: options.expectedSha256 } : undefined,
    produceManifest: options.produceManifest ?? false,
  };
  for (;;) {
    try {
      return await new BlobDownload(params, stats).run();
    } catch (err) {
      if (err instanceof SourceChangedError && options.restartOnChange && stats.restarts === 0) {
        stats.restarts++;
        await removeJournal(journalPathFor(partPath));
        await rm(partPath, { force: true });
        continue;
      }
      throw err;
    }
  }
}

/** Removes a part file and its journal: bytes the caller will not keep (refused after the download). */
export async function discardPart(partPath: string): Promise<void> {
  await rm(partPath, { force: true });
  await removeJournal(journalPathFor(partPath));
}

/** A task a worker holds, with its response when one is already open (the probe, an early open). */
interface Held {
  task: RangeTask;
  body?: Promise<RangeBody> | RangeBody;
  /** The pool slot it runs under (the probe's, handed to the worker that carries on). */
  slot?: RequestSlot;
}

/** A worker's slot of the shared pool, if it holds one now. */
interface Lease {
  slot: RequestSlot | undefined;
}

/** One pass over a blob; a new one is made when the download starts over. */
class BlobDownload {
  private readonly controller = new AbortController();
  /** Aborted when the download ends either way: workers waiting for a pool slot stop waiting. */
  private readonly ended = new AbortController();
  /** The pool slot of the first request (the probe), until a worker takes it over. */
  private probeSlot: RequestSlot | undefined;
  private readonly journalPath: string;
  private readonly journal: JournalKeeper;
  private readonly sources: SourceSet;
  private readonly workers: Array<Promise<void>> = [];
  private readonly manifestIn: Manifest | undefined;
  private readonly sha256In: string | undefined;
  private ranges = new RangeSet();
  private part: PartFile | undefined;
  private hasher: FinishedPrefixHasher | undefined;
  /** Pieces checked against the trusted manifest (with one). */
  private ledger: PieceLedger | undefined;
  private resumedVerified: number[] = [];
  private scheduler: Scheduler | undefined;
  private expect: ProbeExpectation | undefined;
  private size: number | undefined;
  private pieceSize = 0;
  private validator: Validator = {};
  private identity = '';
  private readonly producedPieces: string[] = [];
  /** Sources that wrote into each piece not yet counted (pieces judged with params.pieceDigest). */
  private readonly senders = new Map<number, Set<string>>();
  /** Pieces with bytes from an earlier run: who wrote them is unknown, so they are judged. */
  private readonly resumedPieces = new Set<number>();
  /** The end of the pieces counted so far (judged pieces: the download waits for all). */
  private countedEnd = 0;
  /** Pieces waiting for the digest they are judged against. */
  private judging = 0;
  /** Whether the prefix hasher judges each piece before it counts (params.pieceDigest). */
  private judgesPieces = false;
  private activeRequests = 0;
  private failure: unknown;
  private finished = false;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };
  private readonly completion: Promise<void>;
  private readonly slabs: SlabPool;
  private unsyncedBytes = 0;
  private backgroundSync: Promise<void> | undefined;
  private lastByteAt: number | undefined;
  /** The finished prefix before the latest write (stats.prefixBehindAtLastByte). */
  private prefixBeforeLastByte = 0;
  private paceWindowAt = performance.now();
  /** Since when no source can serve the work left (for sourceWaitMs). */
  private unservableSince: number | undefined;
  /** False for a server that ignores Range: its bytes cannot be resumed. */
  private resumable = true;
  private started = false;
  /** Attempts waiting out their backoff: when each retries, and why it failed. */
  private readonly waits = new Map<object, { until: number; reason: string }>();

  constructor(
    private readonly params: BlobDownloadParams,
    private readonly stats: DownloadStats,
  ) {
    this.journalPath = journalPathFor(params.partPath);
    this.journal = new JournalKeeper(this.journalPath, params.journalIntervalMs, () => this.journalNow());
    // Every request in flight listens for the abort: hundreds of listeners are expected.
    setMaxListeners(0, this.controller.signal);
    // Each worker waiting for a pool slot listens on it: a pull's 16 workers exceed Node's 10.
    setMaxListeners(0, this.ended.signal);
    this.sources = new SourceSet(this.controller.signal);
    if (params.sources.length === 0) throw new UsageError('a download needs at least one source');
    for (const slot of params.sources) this.sources.add(slot);
    const total = params.sources.reduce((sum, s) => sum + s.maxConcurrency, 0);
    this.slabs = slabPoolFor(Math.min(total, 256), params.chunkSize);
    this.manifestIn = params.expected?.manifest;
    this.sha256In = params.expected?.sha256 ?? params.expectedSha256;
    this.checkExpected();
    this.completion = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    this.completion.catch(() => undefined);
  }

  private checkExpected(): void {
    const { manifestIn: manifest, sha256In: sha256 } = this;
    const size = this.params.expected?.size;
    if (!manifest) return;
    if (!isValidManifest(manifest)) throw new UsageError('the expected manifest is malformed');
    if (sha256 !== undefined && manifest.digest !== sha256) {
      throw new UsageError(`the manifest is of ${manifest.digest}, not of the expected ${sha256}`);
    }
    if (size !== undefined && manifest.size !== size) {
      throw new UsageError(`the manifest says ${manifest.size} bytes, the expected size is ${size}`);
    }
  }

  private get signal(): AbortSignal {
    return this.controller.signal;
  }

  private get primaryUrl(): string {
    return (this.sources.all.find((s) => s.slot.kind === 'origin') ?? this.sources.all[0]!).slot.source.url;
  }

  addSource(slot: SourceSlot): void {
    if (this.signal.aborted || this.finished) return;
    const state = this.sources.add(slot);
    this.unservableSince = undefined;
    if (this.started) this.startWorkers(state);
  }

  async run(): Promise<BlobDownloadResult> {
    const { signal: userSignal } = this.params;
    if (userSignal?.aborted) throw cancelled();
    const onUserAbort = (): void => this.fail(cancelled());
    userSignal?.addEventListener('abort', onUserAbort, { once: true });
    const ticker = setInterval(() => this.tick(), PROGRESS_INTERVAL_MS);
    let succeeded = false;
    try {
      const result = await this.transfer();
      succeeded = true;
      this.tick();
      return result;
    } catch (err) {
      this.fail(err);
      this.journal.save();
      const failure = this.failure ?? err;
      // A stream that ignored Range starts over on a rerun: keeping its bytes would promise a resume.
      if (!this.resumable && failure instanceof AbortedError) throw cancelled(NOT_RESUMABLE);
      throw this.resumable ? failure : withoutResume(failure, NOT_RESUMABLE);
    } finally {
      clearInterval(ticker);
      userSignal?.removeEventListener('abort', onUserAbort);
      this.ended.abort();
      this.probeSlot?.release();
      await Promise.allSettled(this.workers);
      this.hasher?.close();
      await this.journal.settled();
      await this.backgroundSync;
      if (this.part) await this.part.close();
      if (!this.resumable && !succeeded) await rm(this.params.partPath, { force: true });
    }
  }

  /** Records the first fatal error and stops every worker. */
  private fail(err: unknown): void {
    this.failure ??= err;
    this.settle.reject(this.failure);
    this.controller.abort();
    this.ended.abort();
  }

  private async transfer(): Promise<BlobDownloadResult> {
    const knownSize = this.manifestIn?.size ?? this.params.expected?.size;
    this.identity = journalIdentity(
      this.manifestIn?.digest ?? this.sha256In,
      this.primaryUrl,
      this.params.journalSha256,
    );
    let journal = await readJournal(this.journalPath, this.identity, this.manifestIn ? undefined : this.primaryUrl);
    let probed: { state: SourceState; probe: ProbeResult } | undefined;
    // A known size with a known digest needs no probe: every source is only asked for ranges.
    if (knownSize === undefined || (this.sha256In === undefined && this.manifestIn === undefined)) {
      if (this.params.requestSlots) {
        this.probeSlot = await this.params.requestSlots.acquire(this.ended.signal);
        if (!this.probeSlot) throw this.failure ?? cancelled();
      }
      let firstRange = this.firstRange(journal);
      try {
        probed = await this.probe(firstRange);
      } catch (err) {
        // The file shrank since the journal was written: start over from byte 0.
        if (!(err instanceof HttpStatusError && err.status === 416 && firstRange[0] > 0)) throw err;
        await removeJournal(this.journalPath);
        journal = undefined;
        firstRange = this.firstRange(undefined);
        probed = await this.probe(firstRange);
      }
      this.validator = probed.probe.validator;
      if (!probed.probe.acceptsRanges || probed.probe.size === undefined) return this.transferWhole(probed);
      if (knownSize !== undefined && probed.probe.size !== knownSize) {
        probed.probe.body.stream.destroy();
        throw new BadResponseError(
          `${probed.state.slot.source.label} has ${probed.probe.size} bytes, ${knownSize} were expected`,
          { url: probed.state.slot.source.url },
        );
      }
    }
    const size = probed?.probe.size ?? knownSize!;
    this.size = size;
    this.pieceSize = this.manifestIn?.pieceSize ?? pieceSizeFor(size);
    this.expect = { size, validator: this.validator };
    this.part = await PartFile.open(this.params.partPath);
    const partSize = await this.part.size();
    if (journal && partSize === size && journalMatches(journal, size, this.validator, this.identity)) {
      this.ranges = new RangeSet(journal.ranges);
      if (this.manifestIn && journal.pieceSize === this.pieceSize) this.resumedVerified = journal.verified;
      this.stats.resumedBytes = this.ranges.size;
    } else if (journal) {
      await removeJournal(this.journalPath);
    }
    try {
      await this.part.preallocate(size, this.params.preallocation);
    } catch (err) {
      // Refused before any byte came (not enough space): a part with nothing to resume from
      // is removed with its journal, so a failed preflight leaves nothing beside --out.
      if (this.ranges.size === 0) {
        await this.journal.discard();
        await this.part.close();
        this.part = undefined;
        await rm(this.params.partPath, { force: true });
      }
      throw err;
    }
    this.journal.save();
    this.startChecks();

    const planned = new RangeSet(this.ranges.toJSON());
    let probeTask: RangeTask | undefined;
    if (probed) {
      const { body } = probed.probe;
      const end = body.end ?? body.start;
      planned.add(body.start, end);
      probeTask = new RangeTask(body.start, end, undefined, Math.floor(body.start / this.pieceSize));
    }
    const scheduler = new Scheduler(
      {
        chunkSize: this.params.chunkSize,
        workers: this.sources.live().reduce((sum, s) => sum + s.slot.maxConcurrency, 0),
        minSplitSize: this.params.minSplitSize,
        maxRequestSize: this.params.maxRequestSize,
        pieceSize: this.pieceSize,
        clientLoad: clientLoadMonitor(() => this.slabs.starvedAcquires),
      },
      planned.missing(size),
    );
    this.scheduler = scheduler;
    if (probeTask && probed) {
      scheduler.adopt(probeTask);
      probed.state.inFlight++;
    }
    this.started = true;
    for (const state of this.sources.live()) {
      const first =
        state === probed?.state ? { task: probeTask!, body: probed.probe.body, slot: this.probeSlot } : undefined;
      if (first) this.probeSlot = undefined;
      this.startWorkers(state, first);
    }
    this.checkDone();
    await this.completion;
    this.stats.splits += scheduler.splits;
    return this.finish(size, probed?.probe.finalUrl ?? this.primaryUrl);
  }

  /** Starts checking pieces: against the manifest, else hashing the finished prefix. */
  private startChecks(): void {
    const part = this.part!;
    const manifest = this.manifestIn;
    if (manifest) {
      this.ledger = new PieceLedger(
        part,
        manifest,
        this.ranges,
        {
          verified: (index) => this.pieceVerified(index),
          mismatched: (index, senders, actual) => this.pieceMismatched(index, senders, actual),
          failed: (err) => this.fail(err),
        },
        this.resumedVerified,
      );
      return;
    }
    if (this.params.pieceDigest && this.pieceSize > 0) {
      for (const [start, end] of this.ranges.toJSON())
        for (let piece = Math.floor(start / this.pieceSize); piece * this.pieceSize < end; piece++)
          this.resumedPieces.add(piece);
    }
    this.hasher = this.prefixHasher(part, this.params.produceManifest);
    this.hasher?.advance(this.ranges.contiguousPrefix());
  }

  /**
   * The probe asks for the first missing bytes (on a resume that is where work starts), at
   * most one chunk and at most 1 MiB, within one piece: small enough that a small file is
   * still shared out evenly once its size is known.
   */
  private firstRange(journal: JournalState | undefined): readonly [number, number] {
    const length = Math.min(this.params.chunkSize, PROBE_SIZE);
    const first = journal ? new RangeSet(journal.ranges).missing(journal.size)[0] : undefined;
    if (!journal || !first || journal.pieceSize <= 0) return [0, length];
    const pieceEnd = (Math.floor(first[0] / journal.pieceSize) + 1) * journal.pieceSize;
    return [first[0], Math.min(first[1], first[0] + length, pieceEnd)];
  }

  /**
   * The hasher of the finished prefix: the whole-file sha256 when one is expected or asked
   * for, and with `produce` the piece digests too (each reported as verified as it passes).
   */
  private prefixHasher(part: PartFile, produce: boolean): FinishedPrefixHasher | undefined {
    if (!produce && !this.sha256In && !this.params.computeSha256) return undefined;
    const judged = produce && this.params.pieceDigest !== undefined && this.size !== undefined && this.resumable;
    this.judgesPieces = judged && this.manifestIn === undefined && this.pieceSize > 0;
    const pieces: PieceDigests | undefined = produce
      ? {
          pieceSize: this.pieceSize,
          size: this.size,
          onPiece: (index: number, digest: string) => this.pieceCounted(index, digest),
          judge: judged ? (index: number, digest: string) => this.judgePiece(index, digest) : undefined,
          failed: (err: unknown) => this.fail(err),
        }
      : undefined;
    const size = this.size ?? 0;
    // A thread costs ~30 ms to start and ~9 MB: worth it where the hash takes longer.
    if (size >= HASH_THREAD_MIN_SIZE) return new ThreadedPrefixHasher(part.path, pieces, DEFAULTS.hashReadSize);
    return new PrefixHasher(part, pieces);
  }

  /** Probes the sources in order of preference (origins first among equals) until one answers. */
  private async probe(range: readonly [number, number]): Promise<{ state: SourceState; probe: ProbeResult }> {
    const order = [...this.sources.live()].sort(
      (a, b) =>
        Number(b.slot.kind === 'origin') - Number(a.slot.kind === 'origin') || a.slot.preference - b.slot.preference,
    );
    for (const [i, state] of order.entries()) {
      const budget = { attempts: 0 };
      for (;;) {
        try {
          this.stats.requests++;
          return { state, probe: await state.slot.source.probe(range, state.signal) };
        } catch (err) {
          if (this.signal.aborted) throw this.failure ?? cancelled();
          const decision = decideAfterFailure(
            err,
            budget,
            state,
            this.params.retry,
            `the first request (bytes ${range[0]}-${range[1] - 1})`,
            state.slot.source.url,
          );
          if (decision.kind === 'fatal') throw decision.error;
          if (decision.kind === 'drop-source') {
            // The last one's own error says most (a 404, a 416 after the file shrank).
            if (i === order.length - 1) throw decision.reason;
            this.dropSource(state, decision.reason);
            break;
          }
          await this.backoff(budget, err, decision.delayMs, this.signal);
        }
      }
    }
    throw this.noSource();
  }

  private startWorkers(state: SourceState, first?: Held): void {
    for (let i = 0; i < state.slot.maxConcurrency; i++) {
      const worker = this.worker(state, i === 0 ? first : undefined).catch((err: unknown) => this.fail(err));
      this.workers.push(worker);
    }
  }

  /** Whether every byte is on disk and every check has passed. */
  private complete(): boolean {
    const scheduler = this.scheduler;
    if (!scheduler || scheduler.inFlight > 0 || scheduler.queued().length > 0) return false;
    // Judged pieces: the bytes are all here only once every piece has passed its check.
    if (this.judgesPieces && this.countedEnd < (this.size ?? 0)) return false;
    return this.ledger?.complete ?? true;
  }

  private checkDone(): void {
    if (this.finished || this.failure || !this.complete()) return;
    this.finished = true;
    this.ended.abort();
    this.settle.resolve();
  }

  private async worker(state: SourceState, first?: Held): Promise<void> {
    const scheduler = this.scheduler!;
    const pool = this.params.requestSlots;
    const accept = (task: RangeTask): boolean => state.hasCapacity && this.sources.shouldTake(state, task.piece);
    let held = first;
    // With a shared pool: held while this worker has ranges to fetch, given back when it has
    // none (and while it waits out a retry's backoff, see runTask).
    const lease: Lease = { slot: first?.slot };
    try {
      while (!this.signal.aborted && !state.dropped && !this.finished) {
        if (!held) {
          if (pool && !lease.slot) {
            // Only a worker with something to fetch waits for a slot; the others poll as before.
            if (scheduler.hasWork(state.id, accept)) lease.slot = await pool.acquire(this.ended.signal);
            if (!lease.slot) {
              if (!this.ended.signal.aborted) await scheduler.idle();
              this.checkServable();
              continue;
            }
          }
          const task = scheduler.take(state.id, accept);
          if (!task) {
            lease.slot?.release();
            lease.slot = undefined;
            await scheduler.idle();
            this.checkServable();
            continue;
          }
          state.inFlight++;
          held = { task };
        }
        const current = held;
        held = undefined;
        const outcome = await this.runTask(state, current, (next) => (held = next), lease);
        state.inFlight--;
        if (outcome === 'done') scheduler.finish(current.task);
        else scheduler.release(current.task);
        this.checkDone();
      }
    } finally {
      lease.slot?.release();
    }
    if (held) {
      if (held.body instanceof Promise) held.body.then(discardBody, () => undefined);
      else if (held.body) discardBody(held.body);
      state.inFlight--;
      scheduler.release(held.task);
    }
  }

  /**
   * Fetches one task to its (possibly shrinking) end from `state`, resuming after each
   * failure. Returns 'released' when the source was dropped and the task must go elsewhere.
   */
  private async runTask(
    state: SourceState,
    held: Held,
    setNext: (next: Held) => void,
    lease: Lease = { slot: undefined },
  ): Promise<'done' | 'released'> {
    const { task } = held;
    const { source } = state.slot;
    let body = held.body;
    let openedNext = false;
    const onAdvance = (t: RangeTask): void => {
      if (openedNext || !this.shouldOpenEarly(t)) return;
      openedNext = true;
      const next = this.scheduler!.take(state.id, (n) => this.sources.shouldTake(state, n.piece));
      if (!next) return;
      state.inFlight++;
      setNext({ task: next, body: this.open(state, next) });
    };
    while (task.pos < task.end) {
      let opened: RangeBody | undefined;
      try {
        opened = await (body ?? this.open(state, task));
        body = undefined;
        this.activeRequests++;
        try {
          await pump(opened, task, {
            part: this.part!,
            slabs: this.slabs,
            label: source.label,
            onWritten: (at, length) => this.record(state, at, length),
            onProgress: () => {
              task.attempts = 0;
              state.failuresInARow = 0;
            },
            onAdvance,
          });
        } finally {
          this.activeRequests--;
        }
      } catch (err) {
        if (opened) discardBody(opened);
        body = undefined;
        if (this.signal.aborted) throw this.failure ?? cancelled();
        if (state.dropped) return 'released';
        const decision = decideAfterFailure(
          err,
          task,
          state,
          this.params.retry,
          `bytes ${task.pos}-${task.end - 1}`,
          source.url,
        );
        if (decision.kind === 'fatal') throw decision.error;
        if (decision.kind === 'drop-source') {
          task.attempts = 0;
          this.dropSource(state, decision.reason);
          return 'released';
        }
        if (decision.hold) task.holdUntil = performance.now() + decision.delayMs;
        // The pool's slot serves another file while this range waits (unless this worker's
        // next request is already open on it).
        const pause = lease.slot !== undefined && !openedNext;
        if (pause) {
          lease.slot!.release();
          lease.slot = undefined;
        }
        await this.backoff(task, err, decision.delayMs, state.signal).catch((waitErr: unknown) => {
          if (!state.dropped || this.signal.aborted) throw waitErr;
        });
        if (pause) {
          lease.slot = await this.params.requestSlots!.acquire(this.ended.signal);
          if (!lease.slot) throw this.failure ?? cancelled();
        }
        task.holdUntil = undefined;
        if (state.dropped) return 'released';
      }
    }
    return 'done';
  }

  /** Opens [task.pos, task.end) on the state's source; the promise never rejects unobserved. */
  private open(state: SourceState, task: RangeTask): Promise<RangeBody> {
    task.requested(performance.now());
    this.stats.requests++;
    const opening = state.slot.source.openRange(task.pos, task.end, this.expect!, state.signal);
    opening.catch(() => undefined);
    return opening;
  }

  /**
   * Whether a worker should open its next request now: the rest of its current response
   * will arrive in about one first-byte latency (with half again as margin), so the next
   * response's head arrives as this one ends.
   */
  private shouldOpenEarly(task: RangeTask): boolean {
    const latency = this.scheduler!.latency.ms;
    if (latency < EARLY_OPEN_MIN_LATENCY_MS) return false;
    const rate = task.rate(performance.now());
    return rate !== undefined && task.remaining <= rate * latency * 1.5;
  }

  private dropSource(state: SourceState, reason: LoomError): void {
    if (!this.sources.drop(state, reason)) return;
    this.scheduler?.forget(state.id);
    this.params.onSourceDropped?.(state.id, reason);
    this.checkServable();
  }

  /** Fails the download when work is left that no source can serve (after sourceWaitMs). */
  private checkServable(): void {
    const scheduler = this.scheduler;
    if (this.finished || this.failure || !scheduler) return;
    const stuck =
      this.sources.live().length === 0 ||
      (scheduler.inFlight === 0 &&
        (this.ledger?.pending ?? 0) === 0 &&
        this.judging === 0 &&
        scheduler.queued().length > 0 &&
        scheduler.queued().every((t) => !this.sources.anyCanServe(t.piece)));
    if (!stuck) {
      this.unservableSince = undefined;
      return;
    }
    const now = performance.now();
    this.unservableSince ??= now;
    if (now - this.unservableSince >= (this.params.sourceWaitMs ?? 0)) this.fail(this.noSource());
  }

  /** The error when no source is left: the only source's own reason, else a summary. */
  private noSource(): LoomError {
    const all = this.sources.all;
    const only = all.length === 1 ? all[0]!.dropped : undefined;
    if (only) return only;
    const missing = this.scheduler?.queued()[0];
    const where = missing ? `bytes ${missing.pos}-${missing.end - 1}` : 'the rest';
    const dropped = this.sources.dropped();
    const why = dropped.length ? `; dropped: ${dropped.map((d) => `${d.id} (${d.code})`).join(', ')}` : '';
    return new NoSourceError(`no source can serve ${where} of ${this.primaryUrl}${why}`, {
      url: this.primaryUrl,
      cause: all.find((s) => s.dropped)?.dropped,
      hint: 'add a source that has the blob (e.g. the origin), then rerun: verified bytes are kept',
    });
  }

  private record(state: SourceState, at: number, length: number): void {
    this.prefixBeforeLastByte = this.ranges.contiguousPrefix();
    this.ranges.add(at, at + length);
    this.stats.transferredBytes += length;
    state.bytes += length;
    this.lastByteAt = performance.now();
    this.ledger?.wrote(state.id, at, length);
    if (this.judgesPieces) this.wroteJudged(state.id, at, length);
    this.hasher?.advance(this.ranges.contiguousPrefix());
    this.journal.received(length, this.size ?? 0);
    this.unsyncedBytes += length;
    if (this.params.fsync && this.unsyncedBytes >= BACKGROUND_SYNC_BYTES && !this.backgroundSync) {
      this.unsyncedBytes = 0;
      // Flushing as we go overlaps the disk's work with the network's, so the final flush
      // before the rename has little left to write.
      this.backgroundSync = this.part!.sync()
        .catch(() => undefined)
        .finally(() => {
          this.backgroundSync = undefined;
        });
    }
  }

  private wroteJudged(sourceId: string, at: number, length: number): void {
    const first = Math.floor(at / this.pieceSize);
    const last = Math.floor((at + length - 1) / this.pieceSize);
    for (let piece = first; piece <= last; piece++) {
      let senders = this.senders.get(piece);
      if (!senders) this.senders.set(piece, (senders = new Set()));
      senders.add(sourceId);
    }
  }

  /** A piece the prefix hasher passed counts (produced manifest, onPieceVerified). */
  private pieceCounted(index: number, digest: string): void {
    this.producedPieces[index] = digest;
    this.senders.delete(index);
    this.scheduler?.settled(index);
    this.countedEnd = Math.max(this.countedEnd, Math.min((index + 1) * this.pieceSize, this.size ?? Infinity));
    this.params.onPieceVerified?.(index, digest);
    this.checkDone();
  }

  /**
   * Whether piece `index` (hashing to `digest`) counts: at once when only the origin wrote it
   * in this run, else once it matches the digest params.pieceDigest gives for it. A mismatch
   * takes its bytes off the ranges before the hasher hears the verdict (it goes back to the
   * piece's start and must not advance over the bad bytes again).
   */
  private judgePiece(index: number, digest: string): PieceVerdict {
    const senders = [...(this.senders.get(index) ?? [])];
    const kinds = senders.map((id) => this.sources.all.find((s) => s.id === id)?.slot.kind);
    if (!this.resumedPieces.has(index) && senders.length > 0 && kinds.every((kind) => kind === 'origin')) return true;
    const size = this.size!;
    this.judging++;
    return this.params.pieceDigest!(index, { size, pieceSize: this.pieceSize }).then(
      (expected) => {
        this.judging--;
        if (this.failure || this.finished) return false;
        if (expected === digest) {
          this.resumedPieces.delete(index);
          return true;
        }
        this.pieceRefused(index, senders, digest, expected);
        return false;
      },
      (err: unknown) => {
        this.judging--;
        this.fail(err);
        return false;
      },
    );
  }

  /**
   * A judged piece does not match the digest published for it (or none will come): its bytes
   * are taken off the part file's ranges and refetched, and a single peer that sent them is
   * dropped (several, or bytes from an earlier run: refetched from one source only, so a
   * second failure names it).
   */
  private pieceRefused(index: number, senders: string[], actual: string, expected: string | undefined): void {
    const start = index * this.pieceSize;
    const end = Math.min(start + this.pieceSize, this.size!);
    this.ranges.remove(start, end);
    this.senders.delete(index);
    // Bytes from an earlier run may be the bad ones: then nobody in this run is to blame.
    const resumed = this.resumedPieces.delete(index);
    if (expected !== undefined && senders.length === 1 && !resumed) {
      const state = this.sources.all.find((s) => s.id === senders[0]);
      const reason = new DigestMismatchError(
        `piece ${index} (bytes ${start}-${end - 1}) from ${senders[0]} has sha256 ${actual}, the lease holder published ${expected}`,
        { expected, actual, url: state?.slot.source.url },
      );
      if (state) this.dropSource(state, reason);
    }
    this.scheduler?.refetch(index, start, end);
    this.checkServable();
  }

  private pieceVerified(index: number): void {
    this.scheduler?.settled(index);
    this.params.onPieceVerified?.(index, this.manifestIn!.pieces[index]!);
    this.checkDone();
  }

  /** A piece's bytes are not the manifest's: refetch it, and drop the source that sent them. */
  private pieceMismatched(index: number, senders: string[], actual: string): void {
    const manifest = this.manifestIn!;
    const [start, end] = pieceRange(manifest, index);
    // One sender is to blame; with several, the piece is refetched from one source only, so a
    // second failure names it.
    if (senders.length === 1) {
      const state = this.sources.all.find((s) => s.id === senders[0]);
      const reason = new DigestMismatchError(
        `piece ${index} (bytes ${start}-${end - 1}) from ${senders[0]} has sha256 ${actual}, the manifest says ${manifest.pieces[index]}`,
        { expected: manifest.pieces[index], actual, url: state?.slot.source.url },
      );
      if (state) this.dropSource(state, reason);
    }
    this.scheduler?.refetch(index, start, end);
    this.checkServable();
  }

  /** A server that ignores Range: one stream from byte 0, retried from the start. */
  private async transferWhole(probed: { state: SourceState; probe: ProbeResult }): Promise<BlobDownloadResult> {
    await removeJournal(this.journalPath);
    this.resumable = false;
    const { state } = probed;
    const source = state.slot.source;
    const budget = { attempts: 0 };
    let current: ProbeResult | undefined = probed.probe;
    for (;;) {
      try {
        if (!current) {
          this.stats.requests++;
          current = await source.probe([0, this.params.chunkSize], state.signal);
          if (current.acceptsRanges) {
            throw new BadResponseError(`${source.label} alternates between honouring and ignoring Range`);
          }
        }
        const { body } = current;
        this.size = body.end;
        this.validator = current.validator;
        this.ranges = new RangeSet();
        if (this.part) await this.part.close();
        await rm(this.params.partPath, { force: true });
        this.part = await PartFile.open(this.params.partPath);
        if (body.end !== undefined) await this.part.preallocate(body.end, this.params.preallocation);
        this.pieceSize = body.end !== undefined ? pieceSizeFor(body.end) : 0;
        this.producedPieces.length = 0;
        this.hasher?.close();
        this.hasher = undefined;
        // Piece digests need the size up front; a stream of unknown length gets only the whole digest.
        this.hasher = this.prefixHasher(this.part, this.params.produceManifest && body.end !== undefined);
        const task = new RangeTask(0, body.end ?? Infinity);
        this.activeRequests++;
        try {
          await pump(body, task, {
            part: this.part,
            slabs: this.slabs,
            label: source.label,
            onWritten: (at, length) => this.record(state, at, length),
            onProgress: () => undefined,
          });
        } finally {
          this.activeRequests--;
        }
        if (body.end === undefined) await this.part.truncate(task.pos);
        this.size = task.pos;
        return await this.finish(task.pos, current.finalUrl);
      } catch (err) {
        current?.body.stream.destroy();
        current = undefined;
        if (this.signal.aborted) throw this.failure ?? cancelled();
        const decision = decideAfterFailure(
          err,
          budget,
          { failuresInARow: 0, maxConcurrency: 1 },
          this.params.retry,
          'the whole-file stream',
          source.url,
        );
        if (decision.kind === 'fatal') throw decision.error;
        if (decision.kind === 'drop-source') throw decision.reason;
        await this.backoff(budget, err, decision.delayMs, this.signal);
      }
    }
  }

  private async finish(size: number, finalUrl: string): Promise<BlobDownloadResult> {
    const part = this.part!;
    let sha256: string | undefined;
    let manifest: Manifest | undefined = this.manifestIn;
    if (this.manifestIn) {
      // Every piece matched a manifest bound to its digest: the blob is that digest.
      sha256 = this.manifestIn.digest;
    } else if (this.hasher) {
      sha256 = await this.hasher.digest(size);
      if (
        this.params.produceManifest &&
        this.pieceSize > 0 &&
        this.producedPieces.length === pieceCount(size, this.pieceSize)
      ) {
        manifest = { digest: sha256, size, pieceSize: this.pieceSize, pieces: [...this.producedPieces] };
      }
    }
    if (this.lastByteAt !== undefined && sha256 !== undefined) {
      this.stats.lastByteToDigestSeconds = Math.max(0, (performance.now() - this.lastByteAt) / 1000);
      this.stats.prefixBehindAtLastByte = size - this.prefixBeforeLastByte;
    }
    const expected = this.sha256In;
    if (expected && sha256 !== expected) {
      await this.journal.discard();
      await part.close();
      await rm(this.params.partPath, { force: true });
      throw new DigestMismatchError(`sha256 mismatch for ${this.primaryUrl}: expected ${expected}, got ${sha256}`, {
        url: this.primaryUrl,
        expected,
        actual: sha256,
        hint: 'the origin served other bytes than the digest describes; nothing was kept',
      });
    }
    if (this.params.fsync) {
      await this.backgroundSync;
      await part.sync();
    }
    // The part is complete: nothing is left to resume, and the caller moves the part away.
    await this.journal.discard();
    return {
      size,
      sha256,
      validator: this.validator,
      finalUrl,
      stats: this.stats,
      manifest,
      bytesBySource: this.sources.bytesBySource(),
      droppedSources: this.sources.dropped(),
    };
  }

  /** Waits `delayMs` before `who` tries again, shown to progress displays meanwhile. */
  private async backoff(who: object, err: unknown, delayMs: number, signal: AbortSignal): Promise<void> {
    this.stats.retries++;
    this.waits.set(who, { until: performance.now() + delayMs, reason: shortReason(err) });
    // Said at once, not at the next tick: a display shows the wait as it starts.
    this.reportProgress();
    try {
      await waitBeforeRetry(delayMs, signal);
    } finally {
      this.waits.delete(who);
    }
  }

  private retryWait(): RetryWait | undefined {
    if (this.waits.size === 0) return undefined;
    const waits = [...this.waits.values()];
    const now = performance.now();
    return {
      ranges: waits.length,
      reason: waits[waits.length - 1]!.reason,
      nextInMs: Math.max(0, Math.min(...waits.map((w) => w.until)) - now),
    };
  }

  private tick(): void {
    this.reportProgress();
    this.checkServable();
    this.checkPace();
    this.journal.tick();
  }

  private reportProgress(): void {
    this.params.onProgress?.({
      totalBytes: this.size,
      doneBytes: this.ranges.size,
      transferredBytes: this.stats.transferredBytes,
      activeRequests: this.activeRequests,
      retries: this.stats.retries,
      contiguousBytes: this.ranges.contiguousPrefix(),
      resumable: this.resumable,
      retrying: this.retryWait(),
    });
  }

  /** Drops a source far behind the others (a peer trickling bytes holds up the verified prefix). */
  private checkPace(): void {
    if (!this.started || this.finished || this.failure) return;
    const now = performance.now();
    for (const state of this.sources.live()) state.accrue();
    if (now - this.paceWindowAt < PACE_WINDOW_MS) return;
    this.paceWindowAt = now;
    for (const { state, rate, best } of this.sources.farBehind()) {
      const kbps = (bytesPerSecond: number): string => `${Math.round(bytesPerSecond / 1000)} kB/s`;
      this.dropSource(
        state,
        new StallError(
          `${state.id} is far behind the other sources: ${kbps(rate)} per connection, the best ${Number.isFinite(best) ? kbps(best) : 'done in a blink'}`,
          { url: state.slot.source.url },
        ),
      );
    }
  }

  /** What the journal would say now; nothing after success or for a stream that cannot resume. */
  private journalNow(): JournalSource | undefined {
    const { size, part } = this;
    if (size === undefined || !this.resumable || !part || (this.finished && !this.failure)) return undefined;
    return {
      state: {
        identity: this.identity,
        size,
        validator: this.validator,
        ranges: this.ranges.toJSON(),
        pieceSize: this.pieceSize,
        verified: [...(this.ledger?.verified ?? [])].sort((a, b) => a - b),
      },
      flush: () => part.sync(),
    };
  }
}
