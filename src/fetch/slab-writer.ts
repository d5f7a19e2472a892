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
  private readonly inFlight = new Set<Promise<void>>();
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
    while (this.inFlight.size) await Promise.all(this.inFlight);
  }

  protected submit(): void {
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
