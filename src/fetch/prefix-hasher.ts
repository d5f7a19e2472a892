// Hashes the file's finished prefix while the rest is still arriving, so the sha256 is
// ready moments after the last byte instead of after a second full pass. It reads back
// what workers wrote (from the page cache), never holding a chunk in memory. In the same
// pass it can digest every piece, which is how the engine produces a manifest.
//
// A piece may also have to be judged before it counts (a follower's piece taken from a
// peer, checked against the digest the lease holder published): the hasher then keeps a
// copy of the running whole-file hash at each piece start, stops at the piece's end until
// the judge answers, and on a refusal goes back to that copy, so bytes that were refused
// never reach the whole-file digest and every byte is still hashed once.
//
// With `wholeFile: false` only the pieces are digested: a follower whose every piece is then
// found in the manifest bound to the published digest needs no whole-file sha256 (see
// PieceDigests.wholeFile), and sha256 is most of a follower's hashing CPU, done twice per byte.
//
// This one runs on the main thread, for small files and streams of unknown length; large
// files hash on a worker thread (hash-thread.ts), beside the data path. Both run the same
// hashing (piece-hashing.ts) and differ only in how they read and wait for verdicts.
import { createHash } from 'node:crypto';
import { DEFAULTS } from '../core/defaults.js';
import type { PartFile } from './part-file.js';
import { createPieceHashing, type EndedPiece, type PieceHashing, type PieceHashingOptions } from './piece-hashing.js';

/** Whether a piece counts: now, or once its check is done. */
export type PieceVerdict = boolean | Promise<boolean>;

export interface PieceDigests {
  pieceSize: number;
  /** The file's size, when known: the last (short) piece then ends in the pass, not at digest(). */
  size?: number;
  /** Called as the prefix passes the end of each piece that counts, in order. */
  onPiece: (index: number, digest: string) => void;
  /**
   * Whether piece `index`, which hashes to `digest`, counts. Refused (false): the hasher goes
   * back to the piece's start, and the caller takes the piece's bytes off the finished prefix
   * before answering, so it advances again only over their replacement. Absent: every piece
   * counts.
   */
  judge?: (index: number, digest: string) => PieceVerdict;
  /** Reading the file failed (a download waiting for the judged prefix must stop). */
  failed?: (err: unknown) => void;
  /**
   * False: digest the pieces only, not the whole file (digest() then resolves to undefined).
   * The caller derives the file's digest from its piece digests and a trusted manifest, or
   * hashes the file again. Default true.
   */
  wholeFile?: boolean;
}

/** What the engine asks of a hasher of the finished prefix, on whichever thread. */
export interface FinishedPrefixHasher {
  /** Tells the hasher that [0, prefixEnd) is on disk; hashing continues in the background. */
  advance(prefixEnd: number): void;
  /** Hashes up to `size` and returns the hex digest (undefined: pieces only, `wholeFile: false`). */
  digest(size: number): Promise<string | undefined>;
  /** Bytes run through sha256 so far, every hash counted (whole file and piece: twice); final after digest(). */
  readonly hashedBytes: number;
  /** Stops hashing (the download failed or is over). */
  close(): void;
}

export class PrefixHasher implements FinishedPrefixHasher {
  private readonly hashing: PieceHashing;
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
    this.hashing = createPieceHashing(createHash, pieceHashingOptions(pieces));
  }

  get hashedBytes(): number {
    return this.hashing.hashedBytes;
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
    const { hashing } = this;
    try {
      while (hashing.hashed < this.target) {
        const length = hashing.nextRead(this.target, this.buffer.length);
        const read = await this.file.read(this.buffer, length, hashing.hashed);
        if (read === 0) throw new Error(`unexpected end of ${this.file.path} at ${hashing.hashed}`);
        const ended = hashing.update(this.buffer.subarray(0, read));
        if (ended) await this.judge(ended);
      }
    } catch (err) {
      this.failure ??= err;
      this.pieces?.failed?.(err);
    }
  }

  /** Counts an ended piece once its verdict says so; refused, its bytes are hashed again. */
  private async judge({ index, digest }: EndedPiece): Promise<void> {
    const verdict = this.pieces!.judge ? this.pieces!.judge(index, digest) : true;
    const accept = verdict === true || (verdict !== false && (await verdict));
    this.hashing.settle(accept);
    if (accept) this.pieces!.onPiece(index, digest);
    // Refused: the piece's bytes are hashed again once their replacement is on disk (the
    // caller took them off the prefix before answering, so advance() starts from here).
    else this.target = this.hashing.hashed;
  }

  /** Hashes up to `size` and returns the hex digest (undefined: pieces only). */
  async digest(size: number): Promise<string | undefined> {
    this.advance(size);
    while (this.running) await this.running;
    if (this.failure) throw this.failure;
    // The last piece is short unless the size is a multiple of the piece size (and it was
    // not ended in the pass because the size was not known).
    const last = this.hashing.endPartial();
    if (last) await this.judge(last);
    return this.hashing.digest();
  }

  close(): void {
    // Nothing to stop: reads run only while the download awaits them, except after a judged
    // piece's verdict comes late (the download failed meanwhile): a refusal reads nothing
    // more, and a read of the closed part file fails into `failed`, which a failed download
    // ignores.
  }
}

/** What both hashers (this one and the worker's) hash, for `pieces` (none: the whole file only). */
export function pieceHashingOptions(pieces: PieceDigests | undefined): PieceHashingOptions {
  return {
    pieceSize: pieces?.pieceSize ?? 0,
    size: pieces?.size,
    judged: pieces?.judge !== undefined,
    wholeFile: pieces?.wholeFile !== false,
  };
}
