// One budget of requests in flight shared by many downloads (a `loom pull` of many files).
// A worker of any download holds a slot while it has a range to fetch and gives it back
// when its download has nothing left for it, so the slots always go where work is: when
// small files finish, the big ones' waiting workers get theirs. Waiting workers are served
// first come, first served. A new file is let in only when a slot is free that no waiting
// worker wants (admit), with that slot reserved for its first request, so files start as
// the pool has room for them and the pool stays busy to the last byte.

/** A held slot; release() is idempotent. */
export interface RequestSlot {
  release(): void;
}

/** What a download needs from the pool: a slot for each request it runs. */
export interface RequestSlots {
  /** A slot, or undefined once `signal` aborts (the download ended while waiting). */
  acquire(signal: AbortSignal): Promise<RequestSlot | undefined>;
}

interface Waiter {
  grant(): void;
  cancel(): void;
}

export class RequestPool {
  private free: number;
  /** Workers with a range to fetch, waiting for a slot. */
  private readonly waiters: Waiter[] = [];
  /** New files waiting for a slot no worker wants. */
  private readonly admissions: Waiter[] = [];

  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError('a request pool needs at least one slot');
    this.free = size;
  }

  /** Slots held now (reserved ones included). */
  get inUse(): number {
    return this.size - this.free;
  }

  acquire(signal: AbortSignal): Promise<RequestSlot | undefined> {
    return this.wait(this.waiters, signal, () => this.free > 0);
  }

  /**
   * Resolves when a slot is free and no worker waits for one, with a member holding that
   * slot for its download's first request; undefined once `signal` aborts. Close the member
   * when its download ends (an unused reservation goes back).
   */
  async admit(signal: AbortSignal): Promise<PoolMember | undefined> {
    const slot = await this.wait(this.admissions, signal, () => this.free > 0 && this.waiters.length === 0);
    return slot && new PoolMember(this, slot);
  }

  private wait(queue: Waiter[], signal: AbortSignal, ready: () => boolean): Promise<RequestSlot | undefined> {
    if (signal.aborted) return Promise.resolve(undefined);
    if (queue.length === 0 && ready()) return Promise.resolve(this.take());
    return new Promise((resolve) => {
      const onAbort = (): void => waiter.cancel();
      const waiter: Waiter = {
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(this.take());
        },
        cancel: () => {
          const at = queue.indexOf(waiter);
          if (at >= 0) queue.splice(at, 1);
          signal.removeEventListener('abort', onAbort);
          resolve(undefined);
          // A worker that stops waiting may be what held an admission back.
          this.dispatch();
        },
      };
      queue.push(waiter);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private take(): RequestSlot {
    this.free--;
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.free++;
        this.dispatch();
      },
    };
  }

  /** Hands free slots to waiting workers first, then to waiting files. */
  private dispatch(): void {
    while (this.free > 0 && this.waiters.length > 0) this.waiters.shift()!.grant();
    while (this.free > 0 && this.waiters.length === 0 && this.admissions.length > 0) this.admissions.shift()!.grant();
  }
}

/** One download's view of the pool: its reserved first slot, then the shared ones. */
export class PoolMember implements RequestSlots {
  private reserved: RequestSlot | undefined;

  constructor(
    private readonly pool: RequestPool,
    reserved: RequestSlot,
  ) {
    this.reserved = reserved;
  }

  acquire(signal: AbortSignal): Promise<RequestSlot | undefined> {
    const reserved = this.reserved;
    this.reserved = undefined;
    if (reserved) return Promise.resolve(reserved);
    return this.pool.acquire(signal);
  }

  /** Gives back the reservation if the download never used it (a cache hit). */
  close(): void {
    this.reserved?.release();
    this.reserved = undefined;
  }
}
