// One pass over a blob, the engine's coordinator: learns the size (what is expected, else the
// probe), resumes what the journal allows, starts the piece checks, plans the ranges and runs
// every source's workers, then finishes (digest, manifest, fsync) or fails, keeping the
// journal for a rerun. It hosts the parts beside it: they call back into it to record bytes,
// drop a source, and see whether the download is done or stuck.
import { setMaxListeners } from 'node:events';
import { rm } from 'node:fs/promises';
import {
  AbortedError,
  cancelled,
  BadResponseError,
  DigestMismatchError,
  UsageError,
  type LoomError,
} from '../core/errors.js';
import { checkExpectedManifest, pieceSizeFor, type Manifest } from '../core/manifest.js';
import type { ProbeResult, Validator } from '../sources/source.js';
import { DownloadProgress } from './download-progress.js';
import type { BlobDownloadParams, BlobDownloadResult } from './download-types.js';
import {
  JournalKeeper,
  journalIdentity,
  journalMatches,
  journalPathFor,
  readJournal,
  removeJournal,
  type JournalSource,
} from './journal.js';
import { BackgroundSync, PartFile } from './part-file.js';
import { PieceChecks } from './piece-checks.js';
import { probeFirst, probeTask, type Probed } from './probe.js';
import { RangeSet } from './range-set.js';
import type { RequestSlot, RequestSlots } from './request-pool.js';
import { withoutResume } from './retry-budget.js';
import type { RetryOptions } from './retry-policy.js';
import { clientLoadMonitor, Scheduler } from './scheduler.js';
import { slabPoolFor, type SlabPool } from './slab-pool.js';
import { SourceSet, type SourceSlot, type SourceState } from './source-set.js';
import { SourceWorkers } from './source-worker.js';
import type { DownloadStats } from './stats.js';
import { wholeFileBlame } from './whole-file-blame.js';
import { streamWhole } from './whole-stream.js';

const PROGRESS_INTERVAL_MS = 100;
const NOT_RESUMABLE = 'the server does not support ranges, so nothing was kept: a rerun starts over';
const BACKGROUND_SYNC_BYTES = 128 * 1024 * 1024;

/** One pass over a blob; a new one is made when the download starts over (downloadToPart). */
export class BlobDownload {
  private readonly controller = new AbortController();
  private readonly endedController = new AbortController();
  /** Aborted when the download fails. */
  readonly signal: AbortSignal = this.controller.signal;
  /** Aborted when the download ends either way: workers waiting for a pool slot stop waiting. */
  readonly ended: AbortSignal = this.endedController.signal;
  /** The pool slot of the first request (the probe), until a worker takes it over. */
  private probeSlot: RequestSlot | undefined;
  private readonly journalPath: string;
  private readonly journal: JournalKeeper;
  readonly sources: SourceSet;
  readonly progress: DownloadProgress;
  readonly slabs: SlabPool;
  private readonly manifestIn: Manifest | undefined;
  private readonly sha256In: string | undefined;
  private ranges = new RangeSet();
  private part: PartFile | undefined;
  private checks: PieceChecks | undefined;
  private resumedVerified: number[] = [];
  scheduler: Scheduler | undefined;
  private workers: SourceWorkers | undefined;
  private size: number | undefined;
  private pieceSize = 0;
  private validator: Validator = {};
  private identity = '';
  failure: unknown;
  finished = false;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };
  private readonly completion: Promise<void>;
  /** With params.fsync: flushes as the bytes come. */
  private readonly backgroundSync: BackgroundSync | undefined;
  /** False for a server that ignores Range: its bytes cannot be resumed. */
  private resumable = true;
  private started = false;

  readonly retry: RetryOptions;
  readonly requestSlots: RequestSlots | undefined;

  constructor(
    private readonly params: BlobDownloadParams,
    readonly stats: DownloadStats,
  ) {
    this.retry = params.retry;
    this.requestSlots = params.requestSlots;
    this.journalPath = journalPathFor(params.partPath);
    this.backgroundSync = params.fsync ? new BackgroundSync(BACKGROUND_SYNC_BYTES) : undefined;
    this.journal = new JournalKeeper(this.journalPath, params.journalIntervalMs, () => this.journalNow());
    // Every request in flight listens for the abort: hundreds of listeners are expected.
    setMaxListeners(0, this.controller.signal);
    // Each worker waiting for a pool slot listens on it: a pull's 16 workers exceed Node's 10.
    setMaxListeners(0, this.endedController.signal);
    this.sources = new SourceSet(this.controller.signal, params.url);
    if (params.sources.length === 0) throw new UsageError('a download needs at least one source');
    for (const slot of params.sources) this.sources.add(slot);
    const total = params.sources.reduce((sum, s) => sum + s.maxConcurrency, 0);
    this.slabs = slabPoolFor(Math.min(total, 256), params.chunkSize);
    this.progress = new DownloadProgress(this.stats, params.onProgress, () => ({
      size: this.size,
      ranges: this.ranges,
      resumable: this.resumable,
    }));
    this.manifestIn = params.expected?.manifest;
    this.sha256In = params.expected?.sha256 ?? params.expectedSha256;
    if (this.manifestIn) checkExpectedManifest(this.manifestIn, this.sha256In, params.expected?.size);
    this.completion = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    this.completion.catch(() => undefined);
  }

  /** The download failed or finished. */
  get over(): boolean {
    return Boolean(this.failure) || this.finished;
  }

  addSource(slot: SourceSlot): void {
    if (this.signal.aborted || this.finished) return;
    const state = this.sources.add(slot);
    if (this.started) this.workers?.start(state);
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
      this.endedController.abort();
      this.probeSlot?.release();
      await this.workers?.settled();
      this.checks?.close();
      await this.journal.settled();
      // Taken once every write has settled: the most the part holds.
      if (!succeeded && this.params.trail) {
        this.params.trail.partial = this.journalNow()?.state;
        this.params.trail.bytesBySource = this.sources.bytesBySource();
      }
      await this.backgroundSync?.settled();
      if (this.part) await this.part.close();
      if (!this.resumable && !succeeded) await rm(this.params.partPath, { force: true });
    }
  }

  /** Records the first fatal error and stops every worker. */
  fail(err: unknown): void {
    this.failure ??= err;
    this.settle.reject(this.failure);
    this.controller.abort();
    this.endedController.abort();
  }

  private async transfer(): Promise<BlobDownloadResult> {
    const knownSize = this.manifestIn?.size ?? this.params.expected?.size;
    this.identity = journalIdentity(
      this.manifestIn?.digest ?? this.sha256In,
      this.sources.primaryUrl,
      this.params.journalSha256,
    );
    let journal = await readJournal(
      this.journalPath,
      this.identity,
      this.manifestIn ? undefined : this.sources.primaryUrl,
    );
    let probed: Probed | undefined;
    // A known size with a known digest needs no probe: every source is only asked for ranges.
    if (knownSize === undefined || (this.sha256In === undefined && this.manifestIn === undefined)) {
      if (this.params.requestSlots) {
        this.probeSlot = await this.params.requestSlots.acquire(this.ended);
        if (!this.probeSlot) throw this.failure ?? cancelled();
      }
      const forgetJournal = (): Promise<void> => removeJournal(this.journalPath);
      ({ probed, journal } = await probeFirst(this, journal, this.params.chunkSize, forgetJournal));
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
    this.checks = this.startChecks(this.part, this.params.produceManifest);

    const planned = new RangeSet(this.ranges.toJSON());
    const first = probed && probeTask(probed.probe, this.pieceSize);
    if (first) planned.add(first.start, first.end);
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
    if (first && probed) {
      scheduler.adopt(first);
      probed.state.inFlight++;
    }
    const workers = new SourceWorkers(this, scheduler, this.part, { size, validator: this.validator });
    this.workers = workers;
    this.started = true;
    for (const state of this.sources.live()) {
      const held =
        state === probed?.state ? { task: first!, body: probed.probe.body, slot: this.probeSlot } : undefined;
      if (held) this.probeSlot = undefined;
      workers.start(state, held);
    }
    this.checkDone();
    await this.completion;
    this.stats.splits += scheduler.splits;
    return this.finish(size, probed?.probe.finalUrl ?? this.sources.primaryUrl);
  }

  /**
   * Starts checking pieces of the part file as it is now: against the manifest, else hashing
   * the finished prefix (with `produce`, the piece digests too).
   */
  private startChecks(part: PartFile, produce: boolean): PieceChecks {
    const { size, pieceSize, ranges, resumedVerified, resumable } = this;
    const manifest = this.manifestIn;
    const sha256 = Boolean(this.sha256In) || this.params.computeSha256;
    return new PieceChecks(
      this,
      { part, ranges, size, pieceSize, manifest, resumedVerified, resumable },
      {
        hooks: this.params,
        sha256,
        pinned: this.sha256In !== undefined,
        produce,
        wholeWithManifest: manifest !== undefined && this.params.expected?.pinned === true,
      },
    );
  }

  /** Whether every byte is on disk and every check has passed. */
  private complete(): boolean {
    const scheduler = this.scheduler;
    if (!scheduler || scheduler.inFlight > 0 || scheduler.queued().length > 0) return false;
    return this.checks?.complete ?? true;
  }

  checkDone(): void {
    if (this.finished || this.failure || !this.complete()) return;
    this.finished = true;
    this.endedController.abort();
    this.settle.resolve();
  }

  dropSource(state: SourceState, reason: LoomError): void {
    if (!this.sources.drop(state, reason)) return;
    this.scheduler?.forget(state.id);
    this.params.onSourceDropped?.(state.id, reason);
    this.checkServable();
  }

  /** Fails the download when work is left that no source can serve (after sourceWaitMs). */
  checkServable(): void {
    const scheduler = this.scheduler;
    if (this.finished || this.failure || !scheduler) return;
    const busy = scheduler.inFlight > 0 || (this.checks?.pending ?? 0) > 0;
    if (this.sources.unservable(scheduler.queued(), busy, this.params.sourceWaitMs ?? 0)) this.fail(this.noSource());
  }

  /** The error when no source is left: the only source's own reason, else a summary. */
  noSource(): LoomError {
    const missing = this.scheduler?.queued()[0];
    return this.sources.noSourceError(missing ? `bytes ${missing.pos}-${missing.end - 1}` : 'the rest');
  }

  record(state: SourceState, at: number, length: number): void {
    const prefixBefore = this.ranges.contiguousPrefix();
    this.ranges.add(at, at + length);
    this.progress.received(length, prefixBefore);
    state.bytes += length;
    this.checks?.wrote(state.id, at, length);
    this.journal.received(length, this.size ?? 0);
    this.backgroundSync?.wrote(this.part!, length);
  }

  /** A server that ignores Range: one stream from byte 0, retried from the start. */
  private async transferWhole(probed: Probed): Promise<BlobDownloadResult> {
    await removeJournal(this.journalPath);
    this.resumable = false;
    return streamWhole(this, probed, this.params.chunkSize);
  }

  /** The whole stream starts (over): an empty part file, checks from byte 0. */
  async restart(probe: ProbeResult): Promise<PartFile> {
    const { body } = probe;
    this.size = body.end;
    this.validator = probe.validator;
    this.ranges = new RangeSet();
    if (this.part) await this.part.close();
    await rm(this.params.partPath, { force: true });
    this.part = await PartFile.open(this.params.partPath);
    if (body.end !== undefined) await this.part.preallocate(body.end, this.params.preallocation);
    this.pieceSize = body.end !== undefined ? pieceSizeFor(body.end) : 0;
    this.checks?.close();
    this.checks = undefined;
    // Piece digests need the size up front; a stream of unknown length gets only the whole digest.
    this.checks = this.startChecks(this.part, this.params.produceManifest && body.end !== undefined);
    return this.part;
  }

  /** Every byte is on disk: the digest and manifest, checked against what was expected. */
  async finish(size: number, finalUrl: string): Promise<BlobDownloadResult> {
    this.size = size;
    const part = this.part!;
    const { sha256, manifest, hashedBytes } = await this.checks!.result(size);
    this.stats.hashedBytes += hashedBytes;
    if (sha256 !== undefined) this.progress.digested(size);
    const expected = this.sha256In;
    if (expected && sha256 !== expected) {
      await this.journal.discard();
      await part.close();
      await rm(this.params.partPath, { force: true });
      const url = this.sources.shownUrl;
      const writers = this.sources.all.map((s) => ({ id: s.id, peer: s.slot.kind === 'peer', bytes: s.bytes }));
      // Without a manifest nothing checked the origin's bytes either: they may be the wrong ones.
      const blame = wholeFileBlame(writers, {
        resumedBytes: this.stats.resumedBytes,
        piecesChecked: this.manifestIn !== undefined,
      });
      const fromPeers = writers.some((w) => w.peer && w.bytes > 0);
      const error = new DigestMismatchError(
        `sha256 mismatch for ${url}: expected ${expected}, got ${sha256}${fromPeers ? `: ${blame.said}` : ''}`,
        {
          url,
          expected,
          actual: sha256,
          hint: fromPeers
            ? 'nothing was kept'
            : 'the origin served other bytes than the digest describes; nothing was kept',
        },
      );
      // As a peer that sent a bad piece: its caller (the fleet) reports it and asks it no more.
      const culprit = this.sources.all.find((s) => s.id === blame.culprit);
      if (culprit && this.sources.drop(culprit, error)) this.params.onSourceDropped?.(culprit.id, error);
      throw error;
    }
    if (this.params.fsync) {
      await this.backgroundSync?.settled();
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

  private tick(): void {
    this.progress.report();
    this.checkServable();
    this.checkPace();
    this.journal.tick();
  }

  /** Drops the sources far behind the others (source-set.ts: pace). */
  private checkPace(): void {
    if (!this.started || this.finished || this.failure) return;
    for (const { state, reason } of this.sources.pace()) this.dropSource(state, reason);
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
        verified: this.checks?.verified ?? [],
      },
      flush: () => part.sync(),
    };
  }
}
