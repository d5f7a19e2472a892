// The sources of one download: each with its own concurrency limit, health and byte count.
// A source that fails repeatedly, serves bytes that fail verification, or cannot be used
// is dropped for this download; its work goes to the others. Several sources able to serve
// a piece: the one with the lowest `preference` that has a free slot takes it. A source far
// slower than the others is found here (pace); so is the error when none is left.
import { setMaxListeners } from 'node:events';
import { NoSourceError, StallError, UsageError, type LoomError } from '../core/errors.js';
import type { Source } from '../sources/source.js';

export interface SourceSlot {
  /** Stable id for stats and reports: 'origin' or the peer's node id. */
  id: string;
  kind: 'origin' | 'peer';
  /** probe() is only used when the size is unknown. */
  source: Source;
  /** Requests streaming from this source at most. */
  maxConcurrency: number;
  /** Whether the source can serve piece `piece` now (peers with partial replicas); absent = all. */
  has?(piece: number): boolean;
  /** Lower is preferred when several sources can serve a piece (peers 0, origin 1). */
  preference: number;
}

/** How long a source's pace is measured before it is compared with the others. */
const PACE_WINDOW_MS = 4_000;
/** A source this many times slower per connection than the best other is dropped. */
const FAR_BEHIND = 16;

export interface DroppedSource {
  id: string;
  code: string;
  message: string;
}

/** One source's state within a download. */
export class SourceState {
  /** Tasks this source's workers hold (streaming or opening); see `inFlight`. */
  private held = 0;
  private heldSince = performance.now();
  /** Failed attempts since this source last sent a byte. */
  failuresInARow = 0;
  /** Body bytes written from this source. */
  bytes = 0;
  dropped: LoomError | undefined;
  /** The current pace window: bytes at its start, and connection-milliseconds spent busy since. */
  windowBytes = 0;
  busyConnectionMs = 0;
  /** Busy connection time over the whole download, for the rate of a source now idle. */
  totalBusyConnectionMs = 0;
  /** Aborts this source's requests only (when it is dropped). */
  private readonly controller = new AbortController();
  readonly signal: AbortSignal;

  constructor(
    readonly slot: SourceSlot,
    downloadSignal: AbortSignal,
  ) {
    setMaxListeners(0, this.controller.signal);
    this.signal = AbortSignal.any([downloadSignal, this.controller.signal]);
    setMaxListeners(0, this.signal);
  }

  get id(): string {
    return this.slot.id;
  }

  get inFlight(): number {
    return this.held;
  }

  /**
   * Busy connection time is added up at every change of the count, not sampled: a source
   * whose requests open and finish between two samples (a peer on the same host) would
   * otherwise show bytes without busy time, "faster than can be measured", and every
   * other source would look far behind it.
   */
  set inFlight(count: number) {
    this.accrue();
    this.held = count;
  }

  /** Adds the connection time spent since the last change to the pace counters. */
  accrue(): void {
    const now = performance.now();
    const busy = this.held * (now - this.heldSince);
    this.heldSince = now;
    this.busyConnectionMs += busy;
    this.totalBusyConnectionMs += busy;
  }

  canServe(piece: number): boolean {
    return !this.dropped && (this.slot.has?.(piece) ?? true);
  }

  get maxConcurrency(): number {
    return this.slot.maxConcurrency;
  }

  get hasCapacity(): boolean {
    return this.inFlight < this.slot.maxConcurrency;
  }

  drop(reason: LoomError): void {
    this.dropped = reason;
    this.controller.abort(reason);
  }
}

export class SourceSet {
  private readonly states: SourceState[] = [];
  private readonly droppedList: DroppedSource[] = [];
  private paceWindowAt = performance.now();
  /** Since when no source can serve the work left (see unservable). */
  private unservableSince: number | undefined;

  /** `asked`: the URL errors name (BlobDownloadParams.url); default primaryUrl. */
  constructor(
    private readonly downloadSignal: AbortSignal,
    private readonly asked?: string,
  ) {}

  add(slot: SourceSlot): SourceState {
    if (this.states.some((s) => s.id === slot.id)) throw new UsageError(`source id "${slot.id}" given twice`);
    if (!Number.isSafeInteger(slot.maxConcurrency) || slot.maxConcurrency < 1) {
      throw new UsageError(`source "${slot.id}": maxConcurrency must be a positive integer`);
    }
    const state = new SourceState(slot, this.downloadSignal);
    this.states.push(state);
    this.unservableSince = undefined;
    return state;
  }

  /** Every source ever added, dropped ones included. */
  get all(): readonly SourceState[] {
    return this.states;
  }

  live(): SourceState[] {
    return this.states.filter((s) => !s.dropped);
  }

  /** The URL that identifies the download (its journal): the first origin's, else the first source's. */
  get primaryUrl(): string {
    return (this.states.find((s) => s.slot.kind === 'origin') ?? this.states[0]!).slot.source.url;
  }

  /** The URL errors name: the one the user asked for, when the caller says, else primaryUrl. */
  get shownUrl(): string {
    return this.asked ?? this.primaryUrl;
  }

  /** Drops a source for the rest of this download; false when it already was. */
  drop(state: SourceState, reason: LoomError): boolean {
    if (state.dropped) return false;
    state.drop(reason);
    this.droppedList.push({ id: state.id, code: reason.code, message: reason.message });
    return true;
  }

  /**
   * Whether `state` should take a task of `piece`: it can serve it and no source it is
   * preferred less than could take it now.
   */
  shouldTake(state: SourceState, piece: number): boolean {
    if (!state.canServe(piece)) return false;
    // A loop, not some() with a closure: idle workers ask this for every range in flight.
    for (const other of this.states) {
      if (
        other !== state &&
        other.slot.preference < state.slot.preference &&
        other.hasCapacity &&
        other.canServe(piece)
      )
        return false;
    }
    return true;
  }

  /**
   * Sources far behind the others over the last window: busy for at least a window's worth
   * of connection time, yet delivering less than 1/FAR_BEHIND of the best other source's
   * bytes per busy connection-second. The last origin is never among them (the source of
   * last resort is slow, not wrong). Starts a new window.
   */
  farBehind(): Array<{ state: SourceState; rate: number; best: number }> {
    const live = this.live();
    // A source idle this window (it finished its share) still shows what it can do: its
    // rate over the whole download. Otherwise the last slow source would never be compared.
    const rate = (s: SourceState): number =>
      s.busyConnectionMs > 0
        ? ((s.bytes - s.windowBytes) / s.busyConnectionMs) * 1000
        : s.totalBusyConnectionMs > 0
          ? (s.bytes / s.totalBusyConnectionMs) * 1000
          : // Bytes delivered between two samples of the clock: faster than can be measured.
            s.bytes > 0
            ? Infinity
            : 0;
    const rates = new Map(live.map((s) => [s, rate(s)]));
    const origins = live.filter((s) => s.slot.kind === 'origin');
    const behind: Array<{ state: SourceState; rate: number; best: number }> = [];
    if (live.length >= 2) {
      for (const state of live) {
        if (state.busyConnectionMs < PACE_WINDOW_MS) continue;
        if (state.slot.kind === 'origin' && origins.length === 1) continue;
        const best = Math.max(...live.filter((o) => o !== state).map((o) => rates.get(o)!));
        const rate = rates.get(state)!;
        if (best > 0 && rate * FAR_BEHIND < best) behind.push({ state, rate, best });
      }
    }
    for (const state of live) {
      state.windowBytes = state.bytes;
      state.busyConnectionMs = 0;
    }
    return behind;
  }

  /**
   * Called at every progress tick: adds up busy time, and once a pace window has passed,
   * returns the sources far behind the others (a peer trickling bytes holds up the verified
   * prefix), each with the error it is dropped with.
   */
  pace(): Array<{ state: SourceState; reason: StallError }> {
    const now = performance.now();
    for (const state of this.live()) state.accrue();
    if (now - this.paceWindowAt < PACE_WINDOW_MS) return [];
    this.paceWindowAt = now;
    const kbps = (bytesPerSecond: number): string => `${Math.round(bytesPerSecond / 1000)} kB/s`;
    return this.farBehind().map(({ state, rate, best }) => ({
      state,
      reason: new StallError(
        `${state.id} is far behind the other sources: ${kbps(rate)} per connection, the best ${Number.isFinite(best) ? kbps(best) : 'done in a blink'}`,
        { url: state.slot.source.url },
      ),
    }));
  }

  /**
   * Whether the download should give up for want of a source: none is left, or nothing is in
   * flight or being checked (`busy`: it could put work back or finish) and no source can
   * serve any piece still `queued`; and that has lasted `waitMs` (a peer's has() may turn
   * true meanwhile, a source may be added).
   */
  unservable(queued: ReadonlyArray<{ piece: number }>, busy: boolean, waitMs: number | (() => number)): boolean {
    const stuck =
      this.live().length === 0 || (!busy && queued.length > 0 && queued.every((t) => !this.anyCanServe(t.piece)));
    if (!stuck) {
      this.unservableSince = undefined;
      return false;
    }
    const now = performance.now();
    this.unservableSince ??= now;
    return now - this.unservableSince >= (typeof waitMs === 'function' ? waitMs() : waitMs);
  }

  /** Whether every source of this download is a peer (a fleet download under --no-origin). */
  peersOnly(): boolean {
    return this.states.every((s) => s.slot.kind === 'peer');
  }

  /**
   * The error when no source can serve `where`: the only source's own reason, else a summary.
   * A lone peer's reason is not the download's: the summary says no source can serve it,
   * naming the peer.
   */
  noSourceError(where: string): LoomError {
    const only = this.states.length === 1 && !this.peersOnly() ? this.states[0]!.dropped : undefined;
    if (only) return only;
    const dropped = this.dropped();
    const why = dropped.length ? `; dropped: ${dropped.map((d) => `${d.id} (${d.code})`).join(', ')}` : '';
    return new NoSourceError(`no source can serve ${where} of ${this.shownUrl}${why}`, {
      url: this.shownUrl,
      cause: this.states.find((s) => s.dropped)?.dropped,
      hint: 'add a source that has the blob (e.g. the origin), then rerun: verified bytes are kept',
    });
  }

  anyCanServe(piece: number): boolean {
    return this.states.some((s) => s.canServe(piece));
  }

  bytesBySource(): Record<string, number> {
    return Object.fromEntries(this.states.map((s) => [s.id, s.bytes]));
  }

  dropped(): DroppedSource[] {
    return [...this.droppedList];
  }
}
