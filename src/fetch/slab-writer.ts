// Writes one response's bytes at their offsets through slabs from the download's pool: a
// full slab goes to disk while the next one fills, so the socket is read while the disk
// writes, and each write is a whole slab rather than one 16 KiB TLS record.
import type { PartFile } from './part-file.js';
import type { SlabPool } from './slab-pool.js';

export class SlabWriter {
  protected slab: Buffer | undefined;
  protected filled = 0;
  /** File offset of the slab's first byte. */
  protected slabStart: number;
  /** Slab writes submitted and not yet done. */
  private inFlight = 0;
  /** While drain() waits: settles once inFlight is back to 0. */
  private idle: { promise: Promise<void>; resolve: () => void } | undefined;
  protected failure: unknown;
  /** Every byte before this is on disk (once no write is in flight). */
  private submittedEnd: number;

  constructor(
    private readonly part: PartFile,
    protected readonly pool: SlabPool,
    start: number,
    private readonly onWritten: (at: number, length: number) => void,
  ) {
    this.slabStart = start;
    this.submittedEnd = start;
  }

  /** Copies the buffer in; resolves when more may be pushed. */
  async push(buffer: Buffer): Promise<void> {
    let offset = 0;
    while (offset < buffer.length) {
      if (this.failure) throw this.failure;
      if (!this.slab) this.slab = await this.pool.acquire();
      const copied = buffer.copy(this.slab, this.filled, offset);
      this.filled += copied;
      offset += copied;
      if (this.filled === this.slab.length) this.submit();
    }
  }

  /** Resolves when every pushed byte is on disk. */
  async flush(): Promise<void> {
    if (this.filled > 0) this.submit();
    else this.releaseEmpty();
    await this.drain();
    if (this.failure) throw this.failure;
  }

  /**
   * After the response failed: writes what arrived before the break (those bytes are good;
   * the retry resumes after them) and returns where the bytes on disk end.
   */
  async settle(): Promise<number> {
    if (this.filled > 0 && !this.failure) this.submit();
    else this.releaseEmpty();
    await this.drain();
    return this.submittedEnd;
  }

  protected releaseEmpty(): void {
    if (this.slab) this.pool.release(this.slab);
    this.slab = undefined;
  }

  protected async drain(): Promise<void> {
    if (this.inFlight === 0) return;
    if (!this.idle) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.idle = { promise, resolve };
    }
    await this.idle.promise;
  }

  protected submit(): void {
    const slab = this.slab!;
    const length = this.filled;
    const at = this.slabStart;
    this.slab = undefined;
    this.filled = 0;
    this.slabStart = at + length;
    this.inFlight++;
    // A callback, not a promise chain: this runs 8,192 times per GiB at 128 KiB slabs.
    this.part.writeAt(slab, length, at, (err) => {
      if (err) this.failure ??= err;
      else {
        this.submittedEnd = Math.max(this.submittedEnd, at + length);
        try {
          this.onWritten(at, length);
        } catch (thrown) {
          this.failure ??= thrown;
        }
      }
      this.pool.release(slab);
      if (--this.inFlight === 0 && this.idle) {
        const { resolve } = this.idle;
        this.idle = undefined;
        resolve();
      }
    });
  }
}
