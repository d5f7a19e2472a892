// The write side of the lean data path: hands the raw HTTP client regions of the download's
// slabs to read into, so a socket's bytes land where they will be written from (no copy),
// and writes each slab at its file offset once it is full. Like SlabWriter, the pool's size
// bounds memory, and a reader that finds no free slab waits (its socket stops reading).
import type { BodySink } from '../sources/raw-http.js';
import type { PartFile } from './part-file.js';
import type { SlabPool } from './slab-pool.js';

export class SlabSink implements BodySink {
  private slab: Buffer | undefined;
  private filled = 0;
  /** File offset of the slab's first byte. */
  private slabStart: number;
  private pending: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown;
  /** Every byte before this is on disk (once no write is in flight). */
  private submittedEnd: number;

  /**
   * @param limit where this range ends now: it shrinks when an idle worker takes the back
   *   half, and the sink then stops taking bytes there.
   */
  constructor(
    private readonly part: PartFile,
    private readonly pool: SlabPool,
    start: number,
    private readonly limit: () => number,
    private readonly onWritten: (at: number, length: number) => void,
  ) {
    this.slabStart = start;
    this.submittedEnd = start;
  }

  /** The next byte's file offset. */
  get position(): number {
    return this.slabStart + this.filled;
  }

  region(): Buffer | undefined {
    if (this.failure) return undefined;
    if (!this.slab) {
      if (this.pending) return undefined;
      const slab = this.pool.acquire();
      if (slab instanceof Promise) {
        this.pending = slab.then((s) => {
          this.slab = s;
          this.pending = undefined;
        });
        return undefined;
      }
      this.slab = slab;
    }
    const room = Math.min(this.slab.length - this.filled, this.limit() - this.position);
    return room > 0 ? this.slab.subarray(this.filled, this.filled + room) : undefined;
  }

  commit(length: number): boolean {
    this.filled += length;
    const end = this.limit();
    if (this.filled === this.slab!.length || this.position >= end) this.submit();
    return this.position < end && !this.failure;
  }

  async ready(): Promise<void> {
    await this.pending;
  }

  /** Resolves when every byte taken is on disk; rejects with the first write failure. */
  async flush(): Promise<void> {
    if (this.filled > 0) this.submit();
    else this.releaseEmpty();
    await this.drain();
    if (this.failure) throw this.failure;
  }

  /** After a failure: writes what arrived before it and returns where the bytes on disk end. */
  async settle(): Promise<number> {
    if (this.filled > 0 && !this.failure) this.submit();
    else this.releaseEmpty();
    await this.drain();
    return this.submittedEnd;
  }

  private releaseEmpty(): void {
    if (this.slab) this.pool.release(this.slab);
    this.slab = undefined;
  }

  private async drain(): Promise<void> {
    await this.pending;
    this.releaseEmpty();
    while (this.inFlight.size) await Promise.all(this.inFlight);
  }

  private submit(): void {
    const slab = this.slab!;
    const length = this.filled;
    const at = this.slabStart;
    this.slab = undefined;
    this.filled = 0;
    this.slabStart = at + length;
    const write = this.part
      .write(slab, length, at)
      .then(
        () => {
          this.submittedEnd = Math.max(this.submittedEnd, at + length);
          this.onWritten(at, length);
        },
        (err: unknown) => {
          this.failure ??= err;
        },
      )
      .finally(() => {
        this.pool.release(slab);
        this.inFlight.delete(write);
      });
    this.inFlight.add(write);
  }
}
