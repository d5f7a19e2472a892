// The write side of the lean data path: hands the raw HTTP client regions of the download's
// slabs to read into, so a socket's bytes land where they will be written from (no copy),
// and writes each slab at its file offset once it is full. Like SlabWriter, the pool's size
// bounds memory, and a reader that finds no free slab waits (its socket stops reading).
import type { BodySink } from '../sources/source.js';
import type { PartFile } from './part-file.js';
import type { SlabPool } from './slab-pool.js';
import { SlabWriter } from './slab-writer.js';

export class SlabSink extends SlabWriter implements BodySink {
  private pending: Promise<void> | undefined;
  /** The last region handed out: asked for again before the next read, it is reused. */
  private lastRegion: Buffer | undefined;

  /**
   * @param limit where this range ends now: it shrinks when an idle worker takes the back
   *   half, and the sink then stops taking bytes there.
   */
  constructor(
    part: PartFile,
    pool: SlabPool,
    start: number,
    private readonly limit: () => number,
    onWritten: (at: number, length: number) => void,
  ) {
    super(part, pool, start, onWritten);
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
    if (room <= 0) return undefined;
    // The raw client asks twice per read (is there room? then where?): one view, not two.
    const last = this.lastRegion;
    if (
      last &&
      last.buffer === this.slab.buffer &&
      last.byteOffset === this.slab.byteOffset + this.filled &&
      last.length === room
    )
      return last;
    return (this.lastRegion = this.slab.subarray(this.filled, this.filled + room));
  }

  commit(length: number): boolean {
    const end = this.limit();
    // The region was handed out before the end moved in (a split): what lies past it is
    // another worker's, and is dropped here.
    this.filled += Math.max(0, Math.min(length, end - this.position));
    if (this.filled === this.slab!.length || this.position >= end) this.submit();
    return this.position < end && !this.failure;
  }

  async ready(): Promise<void> {
    await this.pending;
    // A failed write: the reader must stop, not wait for room that never comes.
    if (this.failure) throw this.failure;
  }

  /** A slab still being acquired is released too, then the writes are waited for. */
  protected override async drain(): Promise<void> {
    await this.pending;
    this.releaseEmpty();
    await super.drain();
  }
}
