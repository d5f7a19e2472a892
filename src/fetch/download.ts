// Downloads one source into a part file: probe, plan, run the worker pool, retry, journal,
// hash. It never renames anything; the caller decides where a finished, verified file goes
// (the output path, or the cache's blob store).
import { setMaxListeners } from 'node:events';
import { rm } from 'node:fs/promises';
import {
  cancelled,
  BadResponseError,
  DigestMismatchError,
  HttpStatusError,
  LoomError,
  NetworkError,
  SourceChangedError,
  isAbortError,
} from '../core/errors.js';
import { DEFAULTS } from '../core/defaults.js';
import type { ProbeExpectation, ProbeResult, RangeBody, Source, Validator } from '../sources/source.js';
import { journalMatches, journalPathFor, readJournal, removeJournal, writeJournal } from './journal.js';
import { PartFile, type Preallocation } from './part-file.js';
import { PrefixHasher } from './prefix-hasher.js';
import { RangeSet, type ByteRange } from './range-set.js';
import { emptyStats, type DownloadStats } from './stats.js';
import { backoffDelay, isRetryable, waitBeforeRetry, type RetryOptions } from './retry-policy.js';
import { clientLoadMonitor, RangeTask, Scheduler } from './scheduler.js';
import { slabPoolFor, type SlabPool } from './slab-pool.js';
import { SlabWriter } from './slab-writer.js';
import { YoungGenerationSweeper } from './young-gc.js';

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
}

export interface DownloadResult {
  size: number;
  /** Hex sha256 of the whole file, when it was asked for (expected or computeSha256). */
  sha256: string | undefined;
  validator: Validator;
  finalUrl: string;
  stats: DownloadStats;
}

export interface DownloadOptions {
  workers: number;
  chunkSize: number;
  /** Largest single request; undefined = an even share of the file per worker. */
  maxRequestSize: number | undefined;
  minSplitSize: number;
  retry: RetryOptions;
  /** The file's sha256 must equal this (lower-case hex). */
  expectedSha256: string | undefined;
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
}

const PROGRESS_INTERVAL_MS = 100;
const PROBE_SIZE = 1024 * 1024;
const BACKGROUND_SYNC_BYTES = 128 * 1024 * 1024;

export async function downloadToPart(
  source: Source,
  partPath: string,
  options: DownloadOptions,
): Promise<DownloadResult> {
  const stats = emptyStats();
  for (;;) {
    try {
      return await new Download(source, partPath, options, stats).run();
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

/** One pass over a source; a new one is made when the download starts over. */
class Download {
  private readonly controller = new AbortController();
  private readonly journalPath: string;
  private ranges = new RangeSet();
  private part: PartFile | undefined;
  private hasher: PrefixHasher | undefined;
  private size: number | undefined;
  private validator: Validator = {};
  private activeRequests = 0;
  private failure: unknown;
  private lastJournalAt = 0;
  private journalWrite: Promise<void> = Promise.resolve();
  private readonly slabs: SlabPool;
  private readonly sweeper = new YoungGenerationSweeper(DEFAULTS.youngGcEveryBytes);
  private unsyncedBytes = 0;
  private backgroundSync: Promise<void> | undefined;
  /** False for a server that ignores Range: its bytes cannot be resumed. */
  private resumable = true;

  constructor(
    private readonly source: Source,
    private readonly partPath: string,
    private readonly options: DownloadOptions,
    private readonly stats: DownloadStats,
  ) {
    this.journalPath = journalPathFor(partPath);
    this.slabs = slabPoolFor(options.workers);
    // Every request in flight listens for the abort: hundreds of listeners are expected.
    setMaxListeners(0, this.controller.signal);
  }

  private get signal(): AbortSignal {
    return this.controller.signal;
  }

  async run(): Promise<DownloadResult> {
    const { signal: userSignal } = this.options;
    if (userSignal?.aborted) throw cancelled();
    const onUserAbort = (): void => this.fail(cancelled());
    userSignal?.addEventListener('abort', onUserAbort, { once: true });
    const ticker = setInterval(() => this.tick(), PROGRESS_INTERVAL_MS);
    try {
      const result = await this.transfer();
      this.tick();
      return result;
    } catch (err) {
      this.saveJournal();
      throw this.failure ?? err;
    } finally {
      clearInterval(ticker);
      userSignal?.removeEventListener('abort', onUserAbort);
      await this.journalWrite;
      await this.backgroundSync;
      if (this.part) await this.part.close();
    }
  }

  /** Records the first fatal error and stops every worker. */
  private fail(err: unknown): void {
    this.failure ??= err;
    this.controller.abort();
  }

  private async transfer(): Promise<DownloadResult> {
    let journal = await readJournal(this.journalPath, this.source.url);
    let firstRange = this.firstRange(journal ? new RangeSet(journal.ranges).missing(journal.size) : [], journal?.size);
    let probe: ProbeResult;
    try {
      probe = await this.withRetry(firstRange, () => this.source.probe(firstRange, this.signal));
    } catch (err) {
      // The file shrank since the journal was written: start over from byte 0.
      if (!(err instanceof HttpStatusError && err.status === 416 && firstRange[0] > 0)) throw err;
      await removeJournal(this.journalPath);
      journal = undefined;
      firstRange = this.firstRange([], undefined);
      probe = await this.withRetry(firstRange, () => this.source.probe(firstRange, this.signal));
    }
    this.validator = probe.validator;
    if (!probe.acceptsRanges || probe.size === undefined) return this.transferWhole(probe);

    const size = probe.size;
    this.size = size;
    this.part = await PartFile.open(this.partPath);
    const partSize = await this.part.size();
    if (journal && partSize === size && journalMatches(journal, size, probe.validator)) {
      this.ranges = new RangeSet(journal.ranges);
      this.stats.resumedBytes = this.ranges.size;
    } else if (journal) {
      await removeJournal(this.journalPath);
    }
    await this.part.preallocate(size, this.options.preallocation);
    this.saveJournal();
    if (this.options.computeSha256 || this.options.expectedSha256) this.hasher = new PrefixHasher(this.part);
    this.hasher?.advance(this.ranges.contiguousPrefix());

    const probeEnd = probe.body.end ?? probe.body.start;
    const planned = new RangeSet(this.ranges.toJSON());
    planned.add(probe.body.start, probeEnd);
    const scheduler = new Scheduler(
      {
        chunkSize: this.options.chunkSize,
        workers: this.options.workers,
        minSplitSize: this.options.minSplitSize,
        maxRequestSize: this.options.maxRequestSize,
        clientLoad: clientLoadMonitor(() => this.slabs.starvedAcquires),
      },
      planned.missing(size),
    );
    const expect: ProbeExpectation = { size, validator: probe.validator };
    const probeTask = new RangeTask(probe.body.start, probeEnd, scheduler.latency);
    scheduler.adopt(probeTask);
    const workers: Array<Promise<void>> = [this.worker(scheduler, expect, probeTask, probe.body)];
    for (let i = 1; i < this.options.workers; i++) workers.push(this.worker(scheduler, expect));
    await Promise.all(workers.map((w) => w.catch((err: unknown) => this.fail(err))));
    this.stats.splits += scheduler.splits;
    if (this.failure) throw this.failure;
    return this.finish(size, probe.finalUrl);
  }

  /**
   * The probe asks for the first missing bytes (on a resume that is where work starts), at
   * most one chunk and at most 1 MiB: small enough that a small file is still shared out
   * evenly once its size is known.
   */
  private firstRange(missing: readonly ByteRange[], size: number | undefined): readonly [number, number] {
    const length = Math.min(this.options.chunkSize, PROBE_SIZE);
    const first = missing[0];
    if (!first || size === undefined) return [0, length];
    return [first[0], Math.min(first[1], first[0] + length)];
  }

  private async worker(
    scheduler: Scheduler,
    expect: ProbeExpectation,
    first?: RangeTask,
    firstBody?: RangeBody,
  ): Promise<void> {
    let task = first;
    let body = firstBody;
    while (!this.signal.aborted) {
      task ??= scheduler.take();
      if (!task) {
        if (scheduler.inFlight === 0) return;
        await scheduler.idle();
        continue;
      }
      await this.runTask(task, expect, body);
      scheduler.finish(task);
      task = undefined;
      body = undefined;
    }
  }

  /** Fetches one task to its (possibly shrinking) end, resuming after each failure. */
  private async runTask(task: RangeTask, expect: ProbeExpectation, firstBody: RangeBody | undefined): Promise<void> {
    let body = firstBody;
    while (task.pos < task.end) {
      try {
        task.requested(performance.now());
        if (!body) {
          this.stats.requests++;
          body = await this.source.openRange(task.pos, task.end, expect, this.signal);
        }
        await this.pump(body, task);
        body = undefined;
      } catch (err) {
        body?.stream.destroy();
        body = undefined;
        await this.afterFailure(task, err, `bytes ${task.pos}-${task.end - 1}`);
      }
    }
  }

  /** Decides whether a failed attempt is retried, and waits the backoff if so. */
  private async afterFailure(task: { attempts: number }, err: unknown, what = 'a range'): Promise<void> {
    if (this.signal.aborted) throw this.failure ?? cancelled();
    if (isAbortError(err)) throw err;
    if (!isRetryable(err)) throw err;
    task.attempts++;
    const { retry } = this.options;
    if (task.attempts >= retry.attempts) throw exhausted(err, this.source.url, retry.attempts, what);
    const retryAfterMs = err instanceof HttpStatusError ? err.retryAfterMs : undefined;
    if (retryAfterMs !== undefined && retryAfterMs > retry.maxRetryAfterMs) {
      throw new NetworkError(`${this.source.url} asked to retry after ${Math.round(retryAfterMs / 1000)} s`, {
        url: this.source.url,
        cause: err,
        hint: 'try again later, or raise the maximum Retry-After (--max-retry-after)',
      });
    }
    this.stats.retries++;
    await waitBeforeRetry(backoffDelay(retry, task.attempts, retryAfterMs), this.signal);
  }

  /** Runs a request-producing call under the retry policy (used for the probe). */
  private async withRetry(range: readonly [number, number], call: () => Promise<ProbeResult>): Promise<ProbeResult> {
    const state = { attempts: 0 };
    for (;;) {
      try {
        this.stats.requests++;
        return await call();
      } catch (err) {
        await this.afterFailure(state, err, `the first request (bytes ${range[0]}-${range[1] - 1})`);
      }
    }
  }

  /**
   * Writes a response body at its offsets until the task's end; validates its length.
   * `task.pos` runs ahead of the disk by what is queued; after a failure it falls back to
   * the last byte written, where the retry resumes.
   */
  private async pump(body: RangeBody, task: RangeTask): Promise<void> {
    const declaredEnd = body.end ?? Infinity;
    const writer = new SlabWriter(this.part!, this.slabs, task.pos, (at, length) => this.record(at, length));
    this.activeRequests++;
    try {
      for await (const buffer of body.stream as AsyncIterable<Buffer>) {
        const limit = Math.min(task.end, declaredEnd);
        const take = Math.min(buffer.length, limit - task.pos);
        if (take > 0) {
          task.flowing();
          task.pos += take;
          await writer.push(take === buffer.length ? buffer : buffer.subarray(0, take));
        }
        if (take < buffer.length) {
          if (task.end < declaredEnd) break; // the back half went to another worker
          throw new BadResponseError(
            `${this.source.label} sent more bytes than the ${declaredEnd - body.start} it declared`,
          );
        }
        if (task.pos >= task.end && task.end < declaredEnd) break;
      }
      await writer.flush();
    } catch (err) {
      task.pos = await writer.settle();
      throw err;
    } finally {
      this.activeRequests--;
      task.stalled();
    }
    const expectedEnd = Math.min(task.end, declaredEnd);
    if (expectedEnd !== Infinity && task.pos < expectedEnd) {
      throw new BadResponseError(
        `${this.source.label} closed the response at byte ${task.pos}, before byte ${expectedEnd}`,
      );
    }
  }

  private record(at: number, length: number): void {
    this.ranges.add(at, at + length);
    this.stats.transferredBytes += length;
    this.sweeper.received(length);
    this.hasher?.advance(this.ranges.contiguousPrefix());
    this.unsyncedBytes += length;
    if (this.options.fsync && this.unsyncedBytes >= BACKGROUND_SYNC_BYTES && !this.backgroundSync) {
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

  /** A server that ignores Range: one stream from byte 0, retried from the start. */
  private async transferWhole(probe: ProbeResult): Promise<DownloadResult> {
    await removeJournal(this.journalPath);
    this.resumable = false;
    const state = { attempts: 0 };
    let current: ProbeResult | undefined = probe;
    for (;;) {
      try {
        if (!current) {
          this.stats.requests++;
          current = await this.source.probe([0, this.options.chunkSize], this.signal);
          if (current.acceptsRanges) {
            throw new BadResponseError(`${this.source.label} alternates between honouring and ignoring Range`);
          }
        }
        const { body } = current;
        this.size = body.end;
        this.validator = current.validator;
        this.ranges = new RangeSet();
        await this.part?.close();
        await rm(this.partPath, { force: true });
        this.part = await PartFile.open(this.partPath);
        if (body.end !== undefined) await this.part.preallocate(body.end, this.options.preallocation);
        const hashing = this.options.computeSha256 || this.options.expectedSha256;
        this.hasher = hashing ? new PrefixHasher(this.part) : undefined;
        const task = new RangeTask(0, body.end ?? Infinity);
        await this.pump(body, task);
        if (body.end === undefined) await this.part.truncate(task.pos);
        this.size = task.pos;
        return await this.finish(task.pos, current.finalUrl);
      } catch (err) {
        current?.body.stream.destroy();
        current = undefined;
        await this.afterFailure(state, err, 'the whole-file stream');
      }
    }
  }

  private async finish(size: number, finalUrl: string): Promise<DownloadResult> {
    const part = this.part!;
    const sha256 = this.hasher ? await this.hasher.digest(size) : undefined;
    const expected = this.options.expectedSha256;
    if (expected && sha256 !== expected) {
      await part.close();
      await rm(this.partPath, { force: true });
      await removeJournal(this.journalPath);
      throw new DigestMismatchError(`sha256 mismatch for ${this.source.url}: expected ${expected}, got ${sha256}`, {
        url: this.source.url,
        expected,
        actual: sha256,
        hint: 'the origin served other bytes than the digest describes; nothing was kept',
      });
    }
    if (this.options.fsync) {
      await this.backgroundSync;
      await part.sync();
    }
    return { size, sha256, validator: this.validator, finalUrl, stats: this.stats };
  }

  private tick(): void {
    this.options.onProgress?.({
      totalBytes: this.size,
      doneBytes: this.ranges.size,
      transferredBytes: this.stats.transferredBytes,
      activeRequests: this.activeRequests,
      retries: this.stats.retries,
    });
    const now = Date.now();
    if (now - this.lastJournalAt >= this.options.journalIntervalMs) {
      this.lastJournalAt = now;
      this.saveJournal();
    }
  }

  private saveJournal(): void {
    const size = this.size;
    if (size === undefined || !this.resumable || !this.part) return;
    const snapshot = { url: this.source.url, size, validator: this.validator, ranges: this.ranges.toJSON() };
    this.journalWrite = this.journalWrite.then(() => writeJournal(this.journalPath, snapshot)).catch(() => undefined);
  }
}

function exhausted(err: unknown, url: string, attempts: number, what: string): LoomError {
  if (err instanceof HttpStatusError || err instanceof SourceChangedError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new NetworkError(`gave up on ${what} of ${url} after ${attempts} attempts: ${reason}`, {
    url,
    cause: err,
    hint: 'check the network or the origin, then rerun: finished bytes are kept and resumed',
  });
}
