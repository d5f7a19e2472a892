// A fixed set of reusable write buffers shared by every worker of a download. Incoming
// socket buffers are copied into a slab at once and dropped, so they die young in V8's
// nursery; slabs go to disk whole, as one pwrite each. Memory is the pool's size, however
// many workers or gigabytes (made as they are first needed), and a worker that finds no
// free slab stops reading its socket.

export class SlabPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: Array<(slab: Buffer) => void> = [];
  /** Acquires that found no free slab: the disk is behind the network. */
  starvedAcquires = 0;

  /** Slabs made so far: made when first needed, so a small file (or a hit) costs none. */
  private made = 0;

  constructor(
    readonly slabSize: number,
    private readonly count: number,
  ) {}

  /** A free slab, waiting for one to be released if all are busy. */
  acquire(): Buffer | Promise<Buffer> {
    const slab = this.free.pop();
    if (slab) return slab;
    if (this.made < this.count) {
      this.made++;
      return Buffer.allocUnsafeSlow(this.slabSize);
    }
    this.starvedAcquires++;
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(slab: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(slab);
    else this.free.push(slab);
  }
}

/**
 * Slabs for a pool serving `workers`: one filling per worker plus headroom for writes in
 * flight, sized so the pool takes about POOL_BYTES whatever the worker count (memory stays
 * flat from 16 to 64 workers). Fewer workers get larger slabs: each slab is one pwrite and a
 * few reads, and at 128 KiB those calls were a third of the user CPU of a download. A slab
 * stays at most an eighth of a request, so bytes reach the disk (and the journal, which
 * counts only written bytes) in steps small against a request: a download killed mid-way
 * keeps nearly all it received.
 */
export function slabPoolFor(workers: number, requestSize: number): SlabPool {
  const count = workers + Math.max(8, Math.ceil(workers / 2));
  let size = MAX_SLAB_SIZE;
  while (size > MIN_SLAB_SIZE && (size * count > POOL_BYTES || size * 8 > requestSize)) size /= 2;
  return new SlabPool(size, count);
}

/** 128 KiB: eight TLS records, 1/8192 of a GiB per syscall. */
export const MIN_SLAB_SIZE = 128 * 1024;
export const MAX_SLAB_SIZE = 1024 * 1024;
/** 16 workers: 24 slabs of 512 KiB; 64 workers: 96 of 128 KiB. */
const POOL_BYTES = 12 * 1024 * 1024;
