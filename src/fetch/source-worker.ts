// A source's workers: each takes a range from the plan, streams it into the part file
// (range-pump.ts), retries it after a failure from where the bytes stopped, and gives it back
// when its source is dropped. A worker opens its next request early when its current one
// will end within about a round trip. With a request pool shared between downloads (a pull),
// a worker holds a slot only while it has a range to fetch, not while it idles or backs off.
import { cancelled, type LoomError } from '../core/errors.js';
import { discardBody, type ProbeExpectation, type RangeBody } from '../sources/source.js';
import type { DownloadProgress } from './download-progress.js';
import type { PartFile } from './part-file.js';
import { pump } from './range-pump.js';
import type { RequestSlot, RequestSlots } from './request-pool.js';
import { decideAfterFailure } from './retry-budget.js';
import type { RetryOptions } from './retry-policy.js';
import type { RangeTask, Scheduler } from './scheduler.js';
import type { SlabPool } from './slab-pool.js';
import type { SourceSet, SourceState } from './source-set.js';
import type { DownloadStats } from './stats.js';

/** Below this first-byte latency a request's round trip is not worth hiding. */
const EARLY_OPEN_MIN_LATENCY_MS = 20;

/** A task a worker holds, with its response when one is already open (the probe, an early open). */
export interface Held {
  task: RangeTask;
  body?: Promise<RangeBody> | RangeBody;
  /** The pool slot it runs under (the probe's, handed to the worker that carries on). */
  slot?: RequestSlot;
}

/** A worker's slot of the shared pool, if it holds one now. */
interface Lease {
  slot: RequestSlot | undefined;
}

/** What the workers need from their download. */
export interface WorkerHost {
  readonly sources: SourceSet;
  readonly stats: DownloadStats;
  readonly progress: DownloadProgress;
  readonly slabs: SlabPool;
  readonly retry: RetryOptions;
  readonly requestSlots: RequestSlots | undefined;
  /** Aborted when the download fails. */
  readonly signal: AbortSignal;
  /** Aborted when the download ends either way: workers waiting for a pool slot stop waiting. */
  readonly ended: AbortSignal;
  readonly finished: boolean;
  /** The first fatal error, once there is one. */
  readonly failure: unknown;
  /** Bytes [at, at + length) from `state` are on disk. */
  record(state: SourceState, at: number, length: number): void;
  dropSource(state: SourceState, reason: LoomError): void;
  /** A range was finished or given back: the download may be complete. */
  checkDone(): void;
  /** A worker found nothing to take: maybe no source can serve what is left. */
  checkServable(): void;
  fail(err: unknown): void;
}

/** The workers of every source of one download, once its size and plan are known. */
export class SourceWorkers {
  private readonly running: Array<Promise<void>> = [];

  constructor(
    private readonly host: WorkerHost,
    private readonly scheduler: Scheduler,
    private readonly part: PartFile,
    private readonly expect: ProbeExpectation,
  ) {}

  /** Starts `state`'s workers; the first carries on with `first` (the probe's response). */
  start(state: SourceState, first?: Held): void {
    for (let i = 0; i < state.slot.maxConcurrency; i++) {
      const worker = this.worker(state, i === 0 ? first : undefined).catch((err: unknown) => this.host.fail(err));
      this.running.push(worker);
    }
  }

  /** Resolves when every worker has stopped. */
  async settled(): Promise<void> {
    await Promise.allSettled(this.running);
  }

  private async worker(state: SourceState, first?: Held): Promise<void> {
    const { host, scheduler } = this;
    const pool = host.requestSlots;
    const accept = (task: RangeTask): boolean => state.hasCapacity && host.sources.shouldTake(state, task.piece);
    let held = first;
    // With a shared pool: held while this worker has ranges to fetch, given back when it has
    // none (and while it waits out a retry's backoff, see runTask).
    const lease: Lease = { slot: first?.slot };
    try {
      while (!host.signal.aborted && !state.dropped && !host.finished) {
        if (!held) {
          if (pool && !lease.slot) {
            // Only a worker with something to fetch waits for a slot; the others poll as before.
            if (scheduler.hasWork(state.id, accept)) lease.slot = await pool.acquire(host.ended);
            if (!lease.slot) {
              if (!host.ended.aborted) await scheduler.idle();
              host.checkServable();
              continue;
            }
          }
          const task = scheduler.take(state.id, accept);
          if (!task) {
            lease.slot?.release();
            lease.slot = undefined;
            await scheduler.idle();
            host.checkServable();
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
        host.checkDone();
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
    lease: Lease,
  ): Promise<'done' | 'released'> {
    const { host } = this;
    const { task } = held;
    const { source } = state.slot;
    let body = held.body;
    let openedNext = false;
    const onAdvance = (t: RangeTask): void => {
      if (openedNext || !this.shouldOpenEarly(t)) return;
      openedNext = true;
      const next = this.scheduler.take(state.id, (n) => host.sources.shouldTake(state, n.piece));
      if (!next) return;
      state.inFlight++;
      setNext({ task: next, body: this.open(state, next) });
    };
    while (task.pos < task.end) {
      let opened: RangeBody | undefined;
      try {
        opened = await (body ?? this.open(state, task));
        body = undefined;
        host.progress.activeRequests++;
        try {
          await pump(opened, task, {
            part: this.part,
            slabs: host.slabs,
            label: source.label,
            onWritten: (at, length) => host.record(state, at, length),
            onProgress: () => {
              task.attempts = 0;
              state.failuresInARow = 0;
            },
            onAdvance,
          });
        } finally {
          host.progress.activeRequests--;
        }
      } catch (err) {
        if (opened) discardBody(opened);
        body = undefined;
        if (host.signal.aborted) throw host.failure ?? cancelled();
        if (state.dropped) return 'released';
        const decision = decideAfterFailure(
          err,
          task,
          state,
          host.retry,
          `bytes ${task.pos}-${task.end - 1}`,
          source.url,
        );
        if (decision.kind === 'fatal') throw decision.error;
        if (decision.kind === 'drop-source') {
          task.attempts = 0;
          host.dropSource(state, decision.reason);
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
        await host.progress.backoff(task, err, decision.delayMs, state.signal).catch((waitErr: unknown) => {
          if (!state.dropped || host.signal.aborted) throw waitErr;
        });
        if (pause) {
          lease.slot = await host.requestSlots!.acquire(host.ended);
          if (!lease.slot) throw host.failure ?? cancelled();
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
    this.host.stats.requests++;
    const opening = state.slot.source.openRange(task.pos, task.end, this.expect, state.signal);
    opening.catch(() => undefined);
    return opening;
  }

  /**
   * Whether a worker should open its next request now: the rest of its current response
   * will arrive in about one first-byte latency (with half again as margin), so the next
   * response's head arrives as this one ends.
   */
  private shouldOpenEarly(task: RangeTask): boolean {
    const latency = this.scheduler.latency.ms;
    if (latency < EARLY_OPEN_MIN_LATENCY_MS) return false;
    const rate = task.rate(performance.now());
    return rate !== undefined && task.remaining <= rate * latency * 1.5;
  }
}
