// Plans which byte ranges the workers fetch, and keeps the pool busy to the last byte:
// missing bytes are cut into runs of whole chunks (one request each, so a high-latency
// origin costs one round trip per run, not per chunk), and a worker that finds nothing
// queued takes the back half of the largest range still in flight, unless this process is
// itself the bottleneck.
import type { ByteRange } from './range-set.js';

/** Smoothed time from sending a request to its first byte, shared by a download's tasks. */
export class FirstByteLatency {
  private estimate: number | undefined;
  observe(ms: number): void {
    this.estimate = this.estimate === undefined ? ms : this.estimate * 0.8 + ms * 0.2;
  }
  get ms(): number {
    return this.estimate ?? 0;
  }
}

/** One request's worth of bytes. `end` shrinks when an idle worker takes its back half. */
export class RangeTask {
  /** Next byte to write; bytes in [start, pos) are on disk. */
  pos: number;
  attempts = 0;
  /** When the current response's first byte arrived, and `pos` at that moment. */
  private flowStart: { at: number; pos: number } | undefined;
  /** When the current request was sent; undefined between attempts. */
  private requestedAt: number | undefined;
  constructor(
    readonly start: number,
    public end: number,
    private readonly latency?: FirstByteLatency,
  ) {
    this.pos = start;
  }
  get remaining(): number {
    return this.end - this.pos;
  }

  requested(now: number): void {
    this.requestedAt = now;
  }

  /** Marks that bytes are flowing (again) from `pos`; a retry restarts the measurement. */
  flowing(): void {
    if (this.flowStart) return;
    const now = performance.now();
    this.flowStart = { at: now, pos: this.pos };
    if (this.requestedAt !== undefined) this.latency?.observe(now - this.requestedAt);
  }

  stalled(): void {
    this.flowStart = undefined;
    this.requestedAt = undefined;
  }

  /**
   * Estimated milliseconds to finish. A request still waiting for its first byte counts
   * as the time it has waited so far; a task between attempts (backoff) as endless.
   */
  etaMs(now: number): number {
    if (!this.flowStart) return this.requestedAt === undefined ? Infinity : now - this.requestedAt;
    const elapsed = now - this.flowStart.at;
    const moved = this.pos - this.flowStart.pos;
    // Too early to measure a rate: count it as the time waited so far.
    if (elapsed < 20 || moved <= 0) return this.requestedAt === undefined ? 0 : now - this.requestedAt;
    return (this.remaining * elapsed) / moved;
  }
}

export interface SchedulerOptions {
  chunkSize: number;
  workers: number;
  /** A split leaves at least this many bytes on each side. */
  minSplitSize: number;
  /**
   * Only a range expected to take longer than this (and than 3 first-byte latencies) is
   * split: a new request costs a round trip, and cutting a response wastes what the
   * sockets already hold. Default 150 ms.
   */
  minSplitEtaMs?: number;
  /** Largest request; default: an even share of the file per worker. */
  maxRequestSize?: number;
  /**
   * How loaded this process is, 0 to 1; above MAX_LOAD_TO_SPLIT no range is split.
   * Default: clientLoadMonitor() without a disk signal.
   */
  clientLoad?: () => number;
}

const DEFAULT_MIN_SPLIT_ETA_MS = 150;

/**
 * A process this loaded is the download's bottleneck: another connection adds no speed,
 * and cutting a response short wastes what its socket buffers already hold. On loopback
 * that was 3-4 MB per split, 4-6% of a 1 GiB file in origin egress, for no gain in time
 * (README, "Tail splits").
 */
export const MAX_LOAD_TO_SPLIT = 0.8;

const LOAD_WINDOW_MS = 250;

/**
 * How loaded this process was over the last quarter second or so, 0 to 1: the event loop's
 * utilization, or 1 when writers waited for the disk (`starvedWrites` grew) in that time.
 * Either way the bytes arrive faster than they can be taken. Until the first window has
 * passed it reads 1: nothing is known yet, and early in a download there is no tail to help.
 */
export function clientLoadMonitor(starvedWrites: () => number = () => 0): () => number {
  let mark = performance.eventLoopUtilization();
  let markedAt = performance.now();
  let starvedAtMark = starvedWrites();
  let recent = 1;
  return () => {
    const now = performance.now();
    if (now - markedAt >= LOAD_WINDOW_MS) {
      const current = performance.eventLoopUtilization();
      const starved = starvedWrites();
      recent = starved > starvedAtMark ? 1 : performance.eventLoopUtilization(current, mark).utilization;
      mark = current;
      markedAt = now;
      starvedAtMark = starved;
    }
    return recent;
  };
}

/**
 * The size of the requests a download starts with. A file of many chunks is cut into runs
 * of whole chunks, an even share per worker; a file of fewer chunks than workers is shared
 * evenly too, in pieces smaller than a chunk, so every worker has work from the start
 * instead of splitting (and wasting the bytes in flight) at the tail.
 */
export function planRunSize(missing: readonly ByteRange[], options: SchedulerOptions): number {
  const total = missing.reduce((sum, [s, e]) => sum + e - s, 0);
  const share = Math.ceil(total / options.workers);
  const limit = options.maxRequestSize ?? Infinity;
  if (share >= options.chunkSize) {
    return Math.min(Math.ceil(share / options.chunkSize) * options.chunkSize, Math.max(limit, options.chunkSize));
  }
  const aligned = Math.ceil(share / SPLIT_ALIGNMENT) * SPLIT_ALIGNMENT;
  return Math.min(Math.max(aligned, options.minSplitSize), Math.max(limit, options.minSplitSize));
}

/** Split points are aligned so writes and reads stay page-friendly. */
const SPLIT_ALIGNMENT = 64 * 1024;

export class Scheduler {
  private readonly queue: RangeTask[] = [];
  private readonly active = new Set<RangeTask>();
  /** Ranges cut in two so far. */
  splits = 0;
  private readonly waiters = new Set<() => void>();
  readonly latency = new FirstByteLatency();
  private readonly clientLoad: () => number;

  constructor(
    private readonly options: SchedulerOptions,
    missing: readonly ByteRange[],
  ) {
    this.clientLoad = options.clientLoad ?? clientLoadMonitor();
    const runSize = planRunSize(missing, options);
    for (const [start, end] of missing) {
      for (let at = start; at < end; at += runSize) {
        this.queue.push(new RangeTask(at, Math.min(end, at + runSize), this.latency));
      }
    }
  }

  /** Adds a task that already has a response (the probe's first range), as in flight. */
  adopt(task: RangeTask): void {
    this.active.add(task);
  }

  /** The next task for an idle worker, or undefined when nothing is left worth splitting. */
  take(): RangeTask | undefined {
    const queued = this.queue.shift();
    if (queued) {
      this.active.add(queued);
      return queued;
    }
    return this.split();
  }

  finish(task: RangeTask): void {
    this.active.delete(task);
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  /**
   * For a worker that found nothing to take while ranges are still in flight: resolves when
   * one finishes or after `pollMs`, whichever is first, so it can look for a split again.
   */
  async idle(pollMs = 25): Promise<void> {
    let wake!: () => void;
    const changed = new Promise<void>((resolve) => (wake = resolve));
    this.waiters.add(wake);
    const timer = setTimeout(wake, pollMs);
    await changed;
    clearTimeout(timer);
    this.waiters.delete(wake);
  }

  get inFlight(): number {
    return this.active.size;
  }

  private split(): RangeTask | undefined {
    const now = performance.now();
    let largest: RangeTask | undefined;
    let largestEta = 0;
    for (const task of this.active) {
      if (task.remaining < 2 * this.options.minSplitSize) continue;
      const eta = task.etaMs(now);
      if (!largest || eta > largestEta || (eta === largestEta && task.remaining > largest.remaining)) {
        largest = task;
        largestEta = eta;
      }
    }
    const threshold = Math.max(this.options.minSplitEtaMs ?? DEFAULT_MIN_SPLIT_ETA_MS, 3 * this.latency.ms);
    if (!largest || largestEta < threshold || this.clientLoad() > MAX_LOAD_TO_SPLIT) return undefined;
    const half = Math.floor(largest.remaining / 2 / SPLIT_ALIGNMENT) * SPLIT_ALIGNMENT;
    const mid = largest.end - Math.max(half, this.options.minSplitSize);
    const stolen = new RangeTask(mid, largest.end, this.latency);
    largest.end = mid;
    this.active.add(stolen);
    this.splits++;
    return stolen;
  }
}
