// Hashes the file's finished prefix while the rest is still arriving, so the sha256 is
// ready moments after the last byte instead of after a second full pass. It reads back
// what workers wrote (from the page cache), never holding a chunk in memory.
//
// It runs on the main thread. A worker thread was measured too: on these 2-core machines it
// was not reliably faster (the CPU, not the thread, is the limit on loopback) and cost ~9 MB
// of RSS, which the 100 MiB memory budget of a download cannot spare.
import { createHash, type Hash } from 'node:crypto';
import { DEFAULTS } from '../core/defaults.js';
import type { PartFile } from './part-file.js';

export class PrefixHasher {
  private readonly hash: Hash = createHash('sha256');
  private hashed = 0;
  private target = 0;
  private running: Promise<void> | undefined;
  private failure: unknown;
  private readonly buffer: Buffer;

  constructor(
    private readonly file: PartFile,
    readSize: number = DEFAULTS.hashReadSize,
  ) {
    this.buffer = Buffer.allocUnsafe(readSize);
  }

  /** Tells the hasher that [0, prefixEnd) is on disk; hashing continues in the background. */
  advance(prefixEnd: number): void {
    if (prefixEnd <= this.target) return;
    this.target = prefixEnd;
    this.running ??= this.run().finally(() => {
      this.running = undefined;
    });
  }

  private async run(): Promise<void> {
    try {
      while (this.hashed < this.target) {
        const length = Math.min(this.buffer.length, this.target - this.hashed);
        const read = await this.file.read(this.buffer, length, this.hashed);
        if (read === 0) throw new Error(`unexpected end of ${this.file.path} at ${this.hashed}`);
        this.hash.update(this.buffer.subarray(0, read));
        this.hashed += read;
      }
    } catch (err) {
      this.failure ??= err;
    }
  }

  /** Hashes up to `size` and returns the hex digest. */
  async digest(size: number): Promise<string> {
    this.advance(size);
    while (this.running) await this.running;
    if (this.failure) throw this.failure;
    return this.hash.digest('hex');
  }
}
