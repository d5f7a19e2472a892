// Decides when each piece of a download counts, and what the finished file's digest is. With
// a trusted manifest every piece is read back and checked against it (PieceLedger); without
// one the finished prefix is hashed as it grows (the whole-file sha256, and with `produce`
// the piece digests), and with `pieceDigest` a piece that a peer (or an earlier run) wrote
// counts only once it matches the digest published for it. A piece that fails its check is
// taken off the part file's ranges and refetched, and the one source that sent it is dropped.
import { DEFAULTS } from '../core/defaults.js';
import { DigestMismatchError, type LoomError } from '../core/errors.js';
import { pieceCount, pieceRange, type Manifest } from '../core/manifest.js';
import type { BlobDownloadParams } from './download-types.js';
import { ThreadedPrefixHasher } from './hash-thread.js';
import type { PartFile } from './part-file.js';
import { PieceLedger, PieceSenders } from './piece-verifier.js';
import { PrefixHasher, type FinishedPrefixHasher, type PieceDigests, type PieceVerdict } from './prefix-hasher.js';
import type { RangeSet } from './range-set.js';
import type { Scheduler } from './scheduler.js';
import type { SourceSet, SourceState } from './source-set.js';

/** From this size on the sha256 runs on a worker thread. */
const HASH_THREAD_MIN_SIZE = 64 * 1024 * 1024;

/** What the checks need from their download. */
export interface PieceCheckHost {
  readonly sources: SourceSet;
  /** Undefined until the plan is made (and for a stream that ignores Range). */
  readonly scheduler: Scheduler | undefined;
  /** The download failed or finished: a verdict that comes late changes nothing. */
  readonly over: boolean;
  dropSource(state: SourceState, reason: LoomError): void;
  /** A piece counted: the download may be complete. */
  checkDone(): void;
  /** A piece went back to the queue: maybe no source left can serve it. */
  checkServable(): void;
  fail(err: unknown): void;
}

/** The file the checks run on. */
export interface CheckedFile {
  part: PartFile;
  /** The ranges on disk (shared with the download: a refused piece is taken off them). */
  ranges: RangeSet;
  /** Undefined for a stream of unknown length (only the whole digest is computed then). */
  size: number | undefined;
  pieceSize: number;
  /** A trusted manifest: every piece is checked against it. */
  manifest: Manifest | undefined;
  /** Pieces an earlier run checked against the same manifest (from the journal). */
  resumedVerified: readonly number[];
  /** False for a server that ignores Range: nothing is judged. */
  resumable: boolean;
}

export interface CheckOptions {
  /** The download's: told of each piece that counts, and asked for a judged piece's digest. */
  hooks: Pick<BlobDownloadParams, 'onPieceVerified' | 'pieceDigest' | 'digestFromPieces'>;
  /** The whole-file sha256 is needed (expected, or asked for). */
  sha256: boolean;
  /** The caller expects a sha256 of its own (a pin): the whole file is always hashed then. */
  pinned: boolean;
  /** Produce the piece digests (a manifest) as the prefix passes them. */
  produce: boolean;
  /** With a manifest: hash the whole file too, for a digest the manifest's publisher did not vouch for. */
  wholeWithManifest?: boolean;
}

export class PieceChecks {
  /** Pieces checked against the trusted manifest (with one). */
  private readonly ledger: PieceLedger | undefined;
  private readonly hasher: FinishedPrefixHasher | undefined;
  /** Sources that wrote into each piece not yet counted (judged pieces). */
  private readonly senders: PieceSenders;
  /** Pieces with bytes from an earlier run: who wrote them is unknown, so they are judged. */
  private readonly resumedPieces = new Set<number>();
  private readonly produced: string[] = [];
  /** The end of the pieces counted so far (judged pieces: the download waits for all). */
  private countedEnd = 0;
  /** Pieces waiting for the digest they are judged against. */
  private judging = 0;
  /** Pieces 0..verifiedPieces-1 all passed the manifest (the whole-file hash of a pin follows them). */
  private verifiedPieces = 0;
  /** Whether the prefix hasher judges each piece before it counts (options.hooks.pieceDigest). */
  private readonly judgesPieces: boolean = false;

  constructor(
    private readonly host: PieceCheckHost,
    private readonly file: CheckedFile,
    private readonly options: CheckOptions,
  ) {
    const { part, ranges, manifest, pieceSize, size } = file;
    this.senders = new PieceSenders(pieceSize);
    if (manifest) {
      this.ledger = new PieceLedger(
        part,
        manifest,
        ranges,
        {
          verified: (index) => this.pieceVerified(index, manifest.pieces[index]!),
          mismatched: (index, senders, actual) =>
            this.refetch(
              index,
              pieceRange(manifest, index),
              senders,
              actual,
              manifest.pieces[index],
              'the manifest says',
            ),
          failed: (err) => host.fail(err),
        },
        file.resumedVerified,
      );
      // The manifest's pieces say nothing of a digest its publisher made up: a pinned digest
      // is checked on the whole file, hashed as the prefix lands, as without a manifest.
      if (options.wholeWithManifest) {
        this.hasher = this.prefixHasher(part, size, undefined, ranges, this.verifiedPrefix());
      }
      return;
    }
    if (options.hooks.pieceDigest && pieceSize > 0) {
      for (const [start, end] of ranges.toJSON())
        for (let piece = Math.floor(start / pieceSize); piece * pieceSize < end; piece++) this.resumedPieces.add(piece);
    }
    const { produce } = options;
    if (!produce && !options.sha256) return;
    const judged = produce && options.hooks.pieceDigest !== undefined && size !== undefined && file.resumable;
    this.judgesPieces = judged && pieceSize > 0;
    // The whole file is hashed at the end instead, only if the caller cannot vouch for it by its pieces.
    const wholeFile = !(this.judgesPieces && options.hooks.digestFromPieces && !options.pinned);
    const pieces: PieceDigests | undefined = produce
      ? {
          wholeFile,
          pieceSize,
          size,
          onPiece: (index: number, digest: string) => this.pieceCounted(index, digest),
          judge: judged ? (index: number, digest: string) => this.judgePiece(index, digest) : undefined,
          failed: (err: unknown) => host.fail(err),
        }
      : undefined;
    this.hasher = this.prefixHasher(part, size, pieces, ranges);
  }

  private prefixHasher(
    part: PartFile,
    size: number | undefined,
    pieces: PieceDigests | undefined,
    ranges: RangeSet,
    prefix = ranges.contiguousPrefix(),
  ): FinishedPrefixHasher {
    // A thread costs ~30 ms to start and ~9 MB: worth it where the hash takes longer.
    const hasher =
      (size ?? 0) >= HASH_THREAD_MIN_SIZE
        ? new ThreadedPrefixHasher(part.path, pieces, DEFAULTS.hashReadSize)
        : new PrefixHasher(part, pieces);
    hasher.advance(prefix);
    return hasher;
  }

  /** Source `sourceId` wrote [at, at + length) (already added to the ranges). */
  wrote(sourceId: string, at: number, length: number): void {
    this.ledger?.wrote(sourceId, at, length);
    if (this.judgesPieces) this.senders.wrote(sourceId, at, length);
    // With a manifest the whole-file hash takes only pieces that passed (a bad one is refetched).
    if (!this.ledger) this.hasher?.advance(this.file.ranges.contiguousPrefix());
  }

  /** The end of pieces 0..k-1, all checked against the manifest. */
  private verifiedPrefix(): number {
    const manifest = this.file.manifest!;
    // Pieces are verified for good (a later refusal never unverifies one): the cursor only moves on.
    while (this.ledger!.verified.has(this.verifiedPieces)) this.verifiedPieces++;
    return this.verifiedPieces >= manifest.pieces.length ? manifest.size : this.verifiedPieces * manifest.pieceSize;
  }

  /** Whether every check has passed, given every byte is on disk. */
  get complete(): boolean {
    // Judged pieces: the bytes are all here only once every piece has passed its check.
    if (this.judgesPieces && this.countedEnd < (this.file.size ?? 0)) return false;
    return this.ledger?.complete ?? true;
  }

  /** Pieces waiting for their check or their verdict: each may still put work back. */
  get pending(): number {
    return (this.ledger?.pending ?? 0) + this.judging;
  }

  /** The pieces checked against the manifest, in order (for the journal). */
  get verified(): number[] {
    return [...(this.ledger?.verified ?? [])].sort((a, b) => a - b);
  }

  /** The file's sha256 (when it was needed) and manifest (the trusted one, or the one produced). */
  async result(
    size: number,
  ): Promise<{ sha256: string | undefined; manifest: Manifest | undefined; hashedBytes: number }> {
    const { manifest, pieceSize } = this.file;
    if (manifest) {
      // Every piece matched a manifest bound to its digest: the blob is that digest, unless the
      // whole file was hashed too (a pinned digest) and says otherwise.
      const checked = this.ledger?.hashedBytes ?? 0;
      if (!this.hasher) return { sha256: manifest.digest, manifest, hashedBytes: checked };
      const sha256 = (await this.hasher.digest(size))!;
      return {
        sha256,
        manifest: sha256 === manifest.digest ? manifest : undefined,
        hashedBytes: checked + this.hasher.hashedBytes,
      };
    }
    if (!this.hasher) return { sha256: undefined, manifest: undefined, hashedBytes: 0 };
    let sha256 = await this.hasher.digest(size);
    let hashedBytes = this.hasher.hashedBytes;
    if (sha256 === undefined) {
      const second = await this.digestFromPieces(size);
      sha256 = second.sha256;
      hashedBytes += second.hashedBytes;
    }
    const all = this.options.produce && pieceSize > 0 && this.produced.length === pieceCount(size, pieceSize);
    return {
      sha256,
      manifest: all ? { digest: sha256, size, pieceSize, pieces: [...this.produced] } : undefined,
      hashedBytes,
    };
  }

  /**
   * The digest of a file whose pieces only were hashed: vouched for by the caller's trusted
   * manifest (hooks.digestFromPieces), else hashed now in a second pass.
   */
  private async digestFromPieces(size: number): Promise<{ sha256: string; hashedBytes: number }> {
    const { pieceSize, part } = this.file;
    const all =
      this.produced.length === pieceCount(size, pieceSize) &&
      Array.from(this.produced).every((digest) => digest !== undefined);
    const vouched = all
      ? await this.options.hooks.digestFromPieces?.([...this.produced], { size, pieceSize })
      : undefined;
    if (vouched !== undefined) return { sha256: vouched, hashedBytes: 0 };
    const hasher = this.prefixHasher(part, size, undefined, this.file.ranges, 0);
    try {
      const sha256 = (await hasher.digest(size))!;
      return { sha256, hashedBytes: hasher.hashedBytes };
    } finally {
      hasher.close();
    }
  }

  close(): void {
    this.hasher?.close();
  }

  /** A piece checked against the manifest counts. */
  private pieceVerified(index: number, digest: string): void {
    this.host.scheduler?.settled(index);
    if (this.ledger && this.hasher) this.hasher.advance(this.verifiedPrefix());
    this.options.hooks.onPieceVerified?.(index, digest);
    this.host.checkDone();
  }

  /** A piece the prefix hasher passed counts (produced manifest, onPieceVerified). */
  private pieceCounted(index: number, digest: string): void {
    const { pieceSize, size } = this.file;
    this.produced[index] = digest;
    this.senders.forget(index);
    this.countedEnd = Math.max(this.countedEnd, Math.min((index + 1) * pieceSize, size ?? Infinity));
    this.pieceVerified(index, digest);
  }

  /**
   * Whether piece `index` (hashing to `digest`) counts: at once when only the origin wrote it
   * in this run, else once it matches the digest options.hooks.pieceDigest gives for it. A mismatch
   * takes its bytes off the ranges before the hasher hears the verdict (it goes back to the
   * piece's start and must not advance over the bad bytes again).
   */
  private judgePiece(index: number, digest: string): PieceVerdict {
    const senders = this.senders.of(index);
    const kinds = senders.map((id) => this.host.sources.all.find((s) => s.id === id)?.slot.kind);
    if (!this.resumedPieces.has(index) && senders.length > 0 && kinds.every((kind) => kind === 'origin')) return true;
    const { pieceSize } = this.file;
    const size = this.file.size!;
    this.judging++;
    return this.options.hooks.pieceDigest!(index, { size, pieceSize }).then(
      (expected) => {
        this.judging--;
        if (this.host.over) return false;
        if (expected === digest) {
          this.resumedPieces.delete(index);
          return true;
        }
        // Refused: none will come, or it does not match.
        const start = index * pieceSize;
        const end = Math.min(start + pieceSize, size);
        this.file.ranges.remove(start, end);
        this.senders.forget(index);
        // Bytes from an earlier run may be the bad ones: then nobody in this run is to blame.
        const resumed = this.resumedPieces.delete(index);
        this.refetch(index, [start, end], resumed ? [] : senders, digest, expected, 'the lease holder published');
        return false;
      },
      (err: unknown) => {
        this.judging--;
        this.host.fail(err);
        return false;
      },
    );
  }

  /**
   * Piece `index`, [start, end), failed its check and its bytes are off the ranges: it is
   * fetched again, and the one source that sent it is dropped. With several senders (or
   * `expected` unknown: no digest will come) nobody is blamed: the piece is refetched from
   * one source only, so a second failure names it.
   */
  private refetch(
    index: number,
    [start, end]: readonly [number, number],
    senders: string[],
    actual: string,
    expected: string | undefined,
    says: string,
  ): void {
    if (expected !== undefined && senders.length === 1) {
      const state = this.host.sources.all.find((s) => s.id === senders[0]);
      const reason = new DigestMismatchError(
        `piece ${index} (bytes ${start}-${end - 1}) from ${senders[0]} has sha256 ${actual}, ${says} ${expected}`,
        { expected, actual, url: state?.slot.source.url },
      );
      if (state) this.host.dropSource(state, reason);
    }
    this.host.scheduler?.refetch(index, start, end);
    this.host.checkServable();
  }
}
