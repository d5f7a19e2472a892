// The sources of one download: each with its own concurrency limit, health and byte count.
// A source that fails repeatedly, serves bytes that fail verification, or cannot be used
// is dropped for this download; its work goes to the others. Several sources able to serve
// a piece: the one with the lowest `preference` that has a free slot takes it.
import { setMaxListeners } from 'node:events';
import { UsageError, type LoomError } from '../core/errors.js';
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

export interface DroppedSource {
  id: string;
  code: string;
  message: string;
}

/** One source's state within a download. */
export class SourceState {
  /** Tasks this source's workers hold (streaming or opening). */
  inFlight = 0;
  /** Failed attempts since this source last sent a byte. */
  failuresInARow = 0;
  /** Body bytes written from this source. */
  bytes = 0;
  dropped: LoomError | undefined;
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

  constructor(private readonly downloadSignal: AbortSignal) {}

  add(slot: SourceSlot): SourceState {
    if (this.states.some((s) => s.id === slot.id)) throw new UsageError(`source id "${slot.id}" given twice`);
    if (!Number.isSafeInteger(slot.maxConcurrency) || slot.maxConcurrency < 1) {
      throw new UsageError(`source "${slot.id}": maxConcurrency must be a positive integer`);
    }
    const state = new SourceState(slot, this.downloadSignal);
    this.states.push(state);
    return state;
  }

  /** Every source ever added, dropped ones included. */
  get all(): readonly SourceState[] {
    return this.states;
  }

  live(): SourceState[] {
    return this.states.filter((s) => !s.dropped);
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
    return !this.states.some(
      (other) =>
        other !== state && other.slot.preference < state.slot.preference && other.hasCapacity && other.canServe(piece),
    );
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
