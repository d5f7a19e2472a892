// The hashing both prefix hashers run, written once: the main-thread PrefixHasher
// (prefix-hasher.ts) calls it directly, the worker-thread one (hash-thread.ts) runs its
// source text (the CLI bundle has no separate file a worker could load). It reads nothing
// and waits for nothing: the caller reads the bytes, and asks for a judged piece's verdict
// in its own way (awaited on the main thread, a message to the worker).
//
// What it does: the whole-file sha256 and each piece's sha256 in one pass; with judged
// pieces, a copy of the whole-file hash at each piece start, so a refused piece goes back
// to it and bytes that were refused never reach the whole-file digest.
//
// Because its source runs in the worker as it is, createPieceHashing refers to nothing
// outside itself (crypto comes in as `makeHash`) and declares no named function inside:
// the bundler (keepNames) wraps those in a helper the worker does not have. Only methods
// and anonymous callbacks; hash-thread.test.ts runs it in a worker either way.
import type { Hash } from 'node:crypto';

export interface PieceHashingOptions {
  /** Bytes per piece; 0: the whole file only. */
  pieceSize: number;
  /** The file's size, when known: the last (short) piece then ends in the pass. */
  size: number | undefined;
  /** Whether each piece waits for a verdict (settle) before the next one starts. */
  judged: boolean;
  /** False: digest the pieces only (digest() is then undefined). */
  wholeFile: boolean;
}

/** A piece whose bytes were all hashed. */
export interface EndedPiece {
  index: number;
  digest: string;
}

export interface PieceHashing {
  /** The prefix hashed so far: the next read starts here. */
  readonly hashed: number;
  /** Bytes run through sha256, every hash counted (whole file and piece: twice). */
  readonly hashedBytes: number;
  /** How many bytes to read at `hashed` toward `target`, `room` at most: never past a piece's end. */
  nextRead(target: number, room: number): number;
  /** Hashes `bytes`, read at `hashed`; the piece they end, if they end one. */
  update(bytes: Uint8Array): EndedPiece | undefined;
  /** Ends the piece begun and not ended (the last one, when the size was not known), if any. */
  endPartial(): EndedPiece | undefined;
  /**
   * The ended piece counts (the next starts after it) or not: hashing goes back to its start
   * (`hashed` says where), the whole-file hash to what it was there. Unjudged pieces count
   * without it.
   */
  settle(accept: boolean): void;
  /** The whole-file digest, once every byte was hashed (undefined: pieces only). */
  digest(): string | undefined;
}

export function createPieceHashing(
  makeHash: (algorithm: 'sha256') => Hash,
  options: PieceHashingOptions,
): PieceHashing {
  const { pieceSize, size, judged, wholeFile } = options;
  let hash = wholeFile ? makeHash('sha256') : undefined;
  /** The whole-file hash at pieceStart, while pieces are judged. */
  let checkpoint = judged && hash ? hash.copy() : undefined;
  let pieceHash = pieceSize > 0 ? makeHash('sha256') : undefined;
  let hashed = 0;
  let hashedBytes = 0;
  let pieceStart = 0;
  const hashing = {
    get hashed() {
      return hashed;
    },
    get hashedBytes() {
      return hashedBytes;
    },
    /** Where the piece being hashed ends. */
    pieceEnd(): number {
      return Math.min(pieceStart + pieceSize, size ?? Infinity);
    },
    nextRead(target: number, room: number): number {
      const length = Math.min(room, target - hashed);
      return pieceHash ? Math.min(length, this.pieceEnd() - hashed) : length;
    },
    update(bytes: Uint8Array): EndedPiece | undefined {
      hash?.update(bytes);
      pieceHash?.update(bytes);
      hashedBytes += bytes.length * (Number(hash !== undefined) + Number(pieceHash !== undefined));
      hashed += bytes.length;
      return pieceHash && hashed === this.pieceEnd() ? this.endPiece() : undefined;
    },
    endPartial(): EndedPiece | undefined {
      return pieceHash && hashed > pieceStart ? this.endPiece() : undefined;
    },
    endPiece(): EndedPiece {
      const digest = pieceHash!.digest('hex');
      pieceHash = makeHash('sha256');
      const index = Math.floor(pieceStart / pieceSize);
      if (!judged) pieceStart = hashed;
      return { index, digest };
    },
    settle(accept: boolean): void {
      if (accept) {
        pieceStart = hashed;
        if (checkpoint) checkpoint = hash!.copy();
        return;
      }
      hash = checkpoint?.copy();
      hashed = pieceStart;
    },
    digest(): string | undefined {
      return hash?.digest('hex');
    },
  };
  return hashing;
}
