// Checks pieces against a trusted manifest once their bytes are on disk. A piece is read
// back from the part file (from the page cache: it was just written) in small reads and
// hashed; only a match counts. Pieces are checked one at a time, in the order they complete,
// so hashing never holds more than one read buffer however many pieces finish together.
import { createHash } from 'node:crypto';
import { DEFAULTS } from '../core/defaults.js';
import { pieceRange, type Manifest } from '../core/manifest.js';
import type { PartFile } from './part-file.js';
import type { RangeSet } from './range-set.js';

export interface PieceVerdicts {
  verified(index: number): void;
  mismatched(index: number, actual: string): void;
  /** A read of the part file failed: the download cannot go on. */
  failed(err: unknown): void;
}

export class PieceVerifier {
  private readonly queue: number[] = [];
  private readonly queued = new Set<number>();
  private running: Promise<void> | undefined;
  private readonly buffer: Buffer;
  /** Bytes hashed checking pieces (a piece checked twice counts twice). */
  hashedBytes = 0;

  constructor(
    private readonly file: PartFile,
    private readonly manifest: Manifest,
    private readonly verdicts: PieceVerdicts,
    readSize: number = DEFAULTS.hashReadSize,
  ) {
    this.buffer = Buffer.allocUnsafe(readSize);
  }

  /** Pieces waiting or being checked. */
  get pending(): number {
    return this.queued.size;
  }

  /** Queues piece `index` (all its bytes are on disk) for checking. */
  check(index: number): void {
    if (this.queued.has(index)) return;
    this.queued.add(index);
    this.queue.push(index);
    this.running ??= this.run().finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves when every queued piece has its verdict. */
  async drain(): Promise<void> {
    while (this.running) await this.running;
  }

  private async run(): Promise<void> {
    for (let index = this.queue.shift(); index !== undefined; index = this.queue.shift()) {
      let actual: string;
      try {
        actual = await this.hashPiece(index);
      } catch (err) {
        this.queued.delete(index);
        this.verdicts.failed(err);
        continue;
      }
      this.queued.delete(index);
      if (actual === this.manifest.pieces[index]) this.verdicts.verified(index);
      else this.verdicts.mismatched(index, actual);
    }
  }

  private async hashPiece(index: number): Promise<string> {
    const [start, end] = pieceRange(this.manifest, index);
    const hash = createHash('sha256');
    for (let at = start; at < end;) {
      const read = await this.file.read(this.buffer, Math.min(this.buffer.length, end - at), at);
      if (read === 0) throw new Error(`unexpected end of ${this.file.path} at ${at}`);
      hash.update(this.buffer.subarray(0, read));
      this.hashedBytes += read;
      at += read;
    }
    return hash.digest('hex');
  }
}

/**
 * Which sources wrote into each piece not yet settled: a piece that fails its check blames
 * its one sender (with several, nobody: it is refetched from one source, so a second
 * failure names it).
 */
export class PieceSenders {
  private readonly byPiece = new Map<number, Set<string>>();

  constructor(private readonly pieceSize: number) {}

  /** Source `sourceId` wrote [at, at + length); returns the pieces it wrote into. */
  wrote(sourceId: string, at: number, length: number): { first: number; last: number } {
    const first = Math.floor(at / this.pieceSize);
    const last = Math.floor((at + length - 1) / this.pieceSize);
    for (let piece = first; piece <= last; piece++) {
      let senders = this.byPiece.get(piece);
      if (!senders) this.byPiece.set(piece, (senders = new Set()));
      senders.add(sourceId);
    }
    return { first, last };
  }

  /** Who wrote into `piece` since it was last settled. */
  of(piece: number): string[] {
    return [...(this.byPiece.get(piece) ?? [])];
  }

  /** The piece counted or was taken off the disk: its senders are of no more interest. */
  forget(piece: number): void {
    this.byPiece.delete(piece);
  }
}

export interface LedgerVerdicts {
  verified(index: number): void;
  /** The piece's bytes were taken off the part file's ranges; `senders` wrote them in this run. */
  mismatched(index: number, senders: string[], actual: string): void;
  failed(err: unknown): void;
}

/**
 * Which pieces are verified, which sources wrote into each piece not yet verified (to blame
 * a bad one), and when a piece is complete on disk and due for its check.
 */
export class PieceLedger {
  /** Bytes hashed checking pieces against the manifest. */
  get hashedBytes(): number {
    return this.verifier.hashedBytes;
  }

  readonly verified = new Set<number>();
  private readonly senders: PieceSenders;
  private readonly verifier: PieceVerifier;

  constructor(
    part: PartFile,
    private readonly manifest: Manifest,
    /** The ranges on disk (shared with the download: a failed piece is removed from them). */
    private readonly onDisk: RangeSet,
    verdicts: LedgerVerdicts,
    resumedVerified: Iterable<number>,
  ) {
    this.senders = new PieceSenders(manifest.pieceSize);
    for (const index of resumedVerified) if (index < manifest.pieces.length) this.verified.add(index);
    this.verifier = new PieceVerifier(part, manifest, {
      verified: (index) => {
        this.verified.add(index);
        this.senders.forget(index);
        verdicts.verified(index);
      },
      mismatched: (index, actual) => {
        const senders = this.senders.of(index);
        this.senders.forget(index);
        this.onDisk.remove(...pieceRange(manifest, index));
        verdicts.mismatched(index, senders, actual);
      },
      failed: (err) => verdicts.failed(err),
    });
    // Pieces a previous run left complete on disk but unchecked.
    for (let i = 0; i < manifest.pieces.length; i++) this.checkIfComplete(i);
  }

  /** Source `sourceId` wrote [at, at + length). */
  wrote(sourceId: string, at: number, length: number): void {
    const { first, last } = this.senders.wrote(sourceId, at, length);
    for (let piece = first; piece <= last; piece++) this.checkIfComplete(piece);
  }

  private checkIfComplete(piece: number): void {
    if (!this.verified.has(piece) && this.onDisk.covers(...pieceRange(this.manifest, piece))) {
      this.verifier.check(piece);
    }
  }

  /** Pieces waiting for or in their check. */
  get pending(): number {
    return this.verifier.pending;
  }

  get complete(): boolean {
    return this.verified.size === this.manifest.pieces.length;
  }
}
