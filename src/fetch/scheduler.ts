// Plans which byte ranges the workers fetch, and keeps the pool busy to the last byte:
// missing bytes are cut into requests of a chunk each, never across a piece boundary, and
// handed out in file order, so the finished (and hashed) prefix follows the download
// closely. Two rules cut a range in flight in two, giving its back half to an idle worker:
// a range far behind the others (it would finish after a request started now) is cut
// before any new range is started ahead of it, so one slow early range does not hold the
// prefix (and the hash) back; and a worker that finds nothing queued takes the back half
// of the range that will take longest. Neither cuts a range while this process is itself
// the bottleneck, while the range waits out a server's Retry-After, or while its piece is
// being refetched from one source only.
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
  /** Failed attempts since the last one that made progress (the retry budget). */
  attempts = 0;
  /** performance.now() until which the server asked us to wait (Retry-After): not split. */
  holdUntil: number | undefined;
  /** When the current response's first byte arrived, and `pos` at that moment. */
  private flowStart: { at: number; pos: number } | undefined;
  /** When the current request was sent; undefined between attempts. */
  private requestedAt: number | undefined;
  constructor(
    readonly start: number,
    public end: number,
    private readonly latency?: FirstByteLatency,
    /** The piece the range lies in (a task never crosses a piece boundary). */
    readonly piece = 0,
  ) {
    this.pos = start;
  }

  /** Bytes per ms of the current response so far; undefined until measurable. */
  rate(now: number): number | undefined {
    if (!this.flowStart) return undefined;
    const elapsed = now - this.flowStart.at;
    const moved = this.pos - this.flowStart.pos;
    return elapsed >= 20 && moved > 0 ? moved / elapsed : undefined;
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
  /** Largest request; default: a chunk. */
  maxRequestSize?: number;
  /** Requests never cross a multiple of this (the manifest's pieces). Default: no boundary. */
  pieceSize?: number;
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
 * The size of the requests a download makes: a chunk (or maxRequestSize), and for a file of
 * fewer chunks than workers an even share, so every worker has work from the start instead
 * of splitting (and wasting the bytes in flight) at the tail. Requests of a chunk, handed out
 * in file order, keep the finished prefix close behind the download; the round trip each
 * one costs is hidden by opening a worker's next request before its current one ends.
 */
export function planRequestSize(missing: readonly ByteRange[], options: SchedulerOptions): number {
  const total = missing.reduce((sum, [s, e]) => sum + e - s, 0);
  const share = Math.ceil(total / options.workers);
  const limit = options.maxRequestSize ?? options.chunkSize;
  const aligned = Math.ceil(share / SPLIT_ALIGNMENT) * SPLIT_ALIGNMENT;
  return Math.max(options.minSplitSize, Math.min(limit, aligned));
}

/** Split points are aligned so writes and reads stay page-friendly. */
const SPLIT_ALIGNMENT = 64 * 1024;

/** Whether the asking worker's source may serve this task. */
export type Accept = (task: RangeTask) => boolean;

export class Scheduler {
  /** Waiting tasks, sorted by start: handed out in file order. */
  private readonly queue: RangeTask[] = [];
  private readonly active = new Set<RangeTask>();
  /** Pieces refetched after a failed check: served by one source, so a second failure names it. */
  private readonly exclusive = new Map<number, string | undefined>();
  /** Ranges cut in two so far. */
  splits = 0;
  private readonly waiters = new Set<() => void>();
  readonly latency = new FirstByteLatency();
  private readonly clientLoad: () => number;
  private readonly requestSize: number;
  private readonly pieceSize: number;

  constructor(
    private readonly options: SchedulerOptions,
    missing: readonly ByteRange[],
  ) {
    this.clientLoad = options.clientLoad ?? clientLoadMonitor();
    this.requestSize = planRequestSize(missing, options);
    this.pieceSize = options.pieceSize ?? Number.MAX_SAFE_INTEGER;
    for (const [start, end] of missing) this.enqueue(start, end);
  }

  /** Cuts [start, end) into requests at piece boundaries and queues them in file order. */
  private enqueue(start: number, end: number): void {
    const tasks: RangeTask[] = [];
    for (let at = start; at < end;) {
      const piece = Math.floor(at / this.pieceSize);
      const stop = Math.min(end, at + this.requestSize, (piece + 1) * this.pieceSize);
      tasks.push(new RangeTask(at, stop, this.latency, piece));
      at = stop;
    }
    if (tasks.length === 0) return;
    const index = this.queue.findIndex((t) => t.start > start);
    this.queue.splice(index === -1 ? this.queue.length : index, 0, ...tasks);
    this.wake();
  }

  /** Adds a task that already has a response (the probe's first range), as in flight. */
  adopt(task: RangeTask): void {
    this.active.add(task);
  }

  /** The next task for an idle worker of source `sourceId`, or undefined when none fits. */
  take(sourceId = '', accept: Accept = () => true): RangeTask | undefined {
    const behind = this.straggler(accept);
    if (behind.cut) return this.cut(behind.cut);
    if (behind.hold) return undefined;
    for (let i = 0; i < this.queue.length; i++) {
      const task = this.queue[i]!;
      if (!this.mayServe(task.piece, sourceId) || !accept(task)) continue;
      this.queue.splice(i, 1);
      if (this.exclusive.has(task.piece)) this.exclusive.set(task.piece, sourceId);
      this.active.add(task);
      return task;
    }
    return this.split(accept);
  }

  /** Whether take() would find something for this worker now (a queued task, or a range to split). */
  hasWork(sourceId = '', accept: Accept = () => true): boolean {
    const behind = this.straggler(accept);
    if (behind.cut) return true;
    if (behind.hold) return false;
    if (this.queue.some((task) => this.mayServe(task.piece, sourceId) && accept(task))) return true;
    return this.splitCandidate(accept) !== undefined;
  }

  private mayServe(piece: number, sourceId: string): boolean {
    const owner = this.exclusive.get(piece);
    return owner === undefined || owner === sourceId;
  }

  finish(task: RangeTask): void {
    this.active.delete(task);
    this.wake();
  }

  /** Gives a task's unfinished bytes back to the queue (its source was dropped). */
  release(task: RangeTask): void {
    this.active.delete(task);
    const owner = this.exclusive.get(task.piece);
    if (owner !== undefined && ![...this.active].some((t) => t.piece === task.piece)) {
      this.exclusive.set(task.piece, undefined);
    }
    this.enqueue(task.pos, task.end);
  }

  /** Queues a piece's bytes again after they failed verification, for one source to refetch. */
  refetch(piece: number, start: number, end: number): void {
    this.exclusive.set(piece, undefined);
    this.enqueue(start, end);
  }

  /** A dropped source no longer holds the pieces it was refetching alone. */
  forget(sourceId: string): void {
    for (const [piece, owner] of this.exclusive) if (owner === sourceId) this.exclusive.set(piece, undefined);
  }

  /** The piece passed its check: any source may serve it again (nothing is left to serve). */
  settled(piece: number): void {
    this.exclusive.delete(piece);
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

  private wake(): void {
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  get inFlight(): number {
    return this.active.size;
  }

  /** Tasks waiting for a worker. */
  queued(): readonly RangeTask[] {
    return this.queue;
  }

  private split(accept: Accept): RangeTask | undefined {
    const largest = this.splitCandidate(accept);
    return largest && this.cut(largest);
  }

  /** Gives the back half of `task` (aligned, at least minSplitSize) to a new task, in flight. */
  private cut(task: RangeTask): RangeTask {
    const half = Math.floor(task.remaining / 2 / SPLIT_ALIGNMENT) * SPLIT_ALIGNMENT;
    const mid = task.end - Math.max(half, this.options.minSplitSize);
    const stolen = new RangeTask(mid, task.end, this.latency, task.piece);
    task.end = mid;
    this.active.add(stolen);
    this.splits++;
    return stolen;
  }

  /** Whether `task` may be cut at all, whichever rule asks. */
  private splittable(task: RangeTask, now: number, accept: Accept): boolean {
    if (task.remaining < 2 * this.options.minSplitSize) return false;
    // The server asked for a pause on this range: another request for it now would be refused too.
    if (task.holdUntil !== undefined && task.holdUntil > now) return false;
    return !this.exclusive.has(task.piece) && accept(task);
  }

  /** A range must be expected to take longer than this to be worth a new request. */
  private minEtaMs(): number {
    return Math.max(this.options.minSplitEtaMs ?? DEFAULT_MIN_SPLIT_ETA_MS, 3 * this.latency.ms);
  }

  /**
   * What to do about the earliest range in flight that is far behind the others: at its own
   * rate it would finish after a request started now at the others' median rate, so the
   * bytes handed out after it arrive first and the finished prefix (and the hash, which can
   * only follow it) stops there. `cut`: its back half goes to the asking worker before any
   * new range is started. `hold`: this process is the bottleneck, so no range is cut (the
   * bytes its socket already holds past the cut would be wasted); while the prefix is more
   * than a pool's worth of requests behind where new ranges start, none is started either:
   * a busy process then shares its time among fewer responses, the straggler's among them,
   * and another connection would add no speed anyway.
   */
  private straggler(accept: Accept): { cut?: RangeTask; hold: boolean } {
    const none = { hold: false };
    if (this.active.size < 2) return none;
    const now = performance.now();
    const rates: number[] = [];
    for (const task of this.active) {
      const rate = task.rate(now);
      if (rate !== undefined) rates.push(rate);
    }
    if (rates.length < 2) return none;
    rates.sort((a, b) => a - b);
    const median = rates[rates.length >> 1]!;
    // What a request started now would take: a round trip, then a request's worth of bytes.
    const freshMs = Math.max(this.minEtaMs(), this.latency.ms + this.requestSize / median);
    // A range still queued below a straggler is handed out first anyway (file order).
    const queuedFrom = this.queue[0]?.start ?? Infinity;
    let behind: RangeTask | undefined;
    let cuttable: RangeTask | undefined;
    for (const task of this.active) {
      if (task.pos >= queuedFrom || task.rate(now) === undefined || task.etaMs(now) <= freshMs) continue;
      if (!behind || task.pos < behind.pos) behind = task;
      if ((!cuttable || task.pos < cuttable.pos) && this.splittable(task, now, accept)) cuttable = task;
    }
    if (!behind) return none;
    if (this.clientLoad() <= MAX_LOAD_TO_SPLIT) {
      return cuttable ? { cut: cuttable, hold: false } : none;
    }
    const hold = queuedFrom !== Infinity && queuedFrom - behind.pos > this.options.workers * this.requestSize;
    return { hold };
  }

  /** The range in flight an idle worker would take the back half of, if any is worth it. */
  private splitCandidate(accept: Accept): RangeTask | undefined {
    const now = performance.now();
    let largest: RangeTask | undefined;
    let largestEta = 0;
    for (const task of this.active) {
      if (!this.splittable(task, now, accept)) continue;
      const eta = task.etaMs(now);
      if (!largest || eta > largestEta || (eta === largestEta && task.remaining > largest.remaining)) {
        largest = task;
        largestEta = eta;
      }
    }
    if (!largest || largestEta < this.minEtaMs() || this.clientLoad() > MAX_LOAD_TO_SPLIT) return undefined;
    return largest;
  }
}
