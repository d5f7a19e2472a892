// Hashes the file's finished prefix while the rest is still arriving, so the sha256 is
// ready moments after the last byte instead of after a second full pass. It reads back
// what workers wrote (from the page cache), never holding a chunk in memory. In the same
// pass it can digest every piece, which is how the engine produces a manifest.
//
// This one runs on the main thread, for small files and streams of unknown length; large
// files hash on a worker thread (hash-thread.ts), beside the data path.
import { createHash, type Hash } from 'node:crypto';
import { DEFAULTS } from '../core/defaults.js';
import type { PartFile } from './part-file.js';

export interface PieceDigests {
  pieceSize: number;
  /** Called as the prefix passes the end of each piece, in order. */
  onPiece: (index: number, digest: string) => void;
}

/** What the engine asks of a hasher of the finished prefix, on whichever thread. */
export interface FinishedPrefixHasher {
  /** Tells the hasher that [0, prefixEnd) is on disk; hashing continues in the background. */
  advance(prefixEnd: number): void;
  /** Hashes up to `size` and returns the hex digest. */
  digest(size: number): Promise<string>;
  /** Stops hashing (the download failed or is over). */
  close(): void;
}

export class PrefixHasher implements FinishedPrefixHasher {
  private readonly hash: Hash = createHash('sha256');
  private pieceHash: Hash | undefined;
  private hashed = 0;
  private target = 0;
  private running: Promise<void> | undefined;
  private failure: unknown;
  private readonly buffer: Buffer;

  constructor(
    private readonly file: PartFile,
    private readonly pieces?: PieceDigests,
    readSize: number = DEFAULTS.hashReadSize,
  ) {
    this.buffer = Buffer.allocUnsafe(readSize);
    if (pieces) this.pieceHash = createHash('sha256');
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
        let length = Math.min(this.buffer.length, this.target - this.hashed);
        if (this.pieces) {
          const pieceEnd = (Math.floor(this.hashed / this.pieces.pieceSize) + 1) * this.pieces.pieceSize;
          length = Math.min(length, pieceEnd - this.hashed);
        }
        const read = await this.file.read(this.buffer, length, this.hashed);
        if (read === 0) throw new Error(`unexpected end of ${this.file.path} at ${this.hashed}`);
        const bytes = this.buffer.subarray(0, read);
        this.hash.update(bytes);
        this.pieceHash?.update(bytes);
        this.hashed += read;
        if (this.pieces && this.hashed % this.pieces.pieceSize === 0) this.endPiece();
      }
    } catch (err) {
      this.failure ??= err;
    }
  }

  private endPiece(): void {
    const { pieceSize, onPiece } = this.pieces!;
    const index = Math.ceil(this.hashed / pieceSize) - 1;
    onPiece(index, this.pieceHash!.digest('hex'));
    this.pieceHash = createHash('sha256');
  }

  /** Hashes up to `size` and returns the hex digest. */
  async digest(size: number): Promise<string> {
    this.advance(size);
    while (this.running) await this.running;
    if (this.failure) throw this.failure;
    // The last piece is short unless the size is a multiple of the piece size.
    if (this.pieces && size % this.pieces.pieceSize !== 0) this.endPiece();
    return this.hash.digest('hex');
  }

  close(): void {
    // Nothing runs but reads the download awaits.
  }
}
