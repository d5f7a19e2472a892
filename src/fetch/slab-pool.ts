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

/** Slabs for a pool serving `workers`: one filling per worker plus headroom for writes in flight. */
export function slabPoolFor(workers: number): SlabPool {
  return new SlabPool(SLAB_SIZE, workers + Math.max(8, Math.ceil(workers / 2)));
}

/** 128 KiB: eight TLS records, 1/8192 of a GiB per syscall, 6 MiB for 16 workers. */
export const SLAB_SIZE = 128 * 1024;
