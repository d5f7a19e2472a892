// A blob's manifest: its sha256 and the sha256 of every fixed-size piece. The lowest layer,
// so the engine, the peers and the control plane share one type and one piece-size rule.
import { createHash } from 'node:crypto';
import { DEFAULTS } from './defaults.js';
import { UsageError } from './errors.js';

/** One blob: `pieces[i]` is the hex sha256 of bytes [i * pieceSize, min(size, (i + 1) * pieceSize)). */
export interface Manifest {
  /** Lower-case hex sha256 of the whole blob. */
  digest: string;
  size: number;
  pieceSize: number;
  /** Lower-case hex sha256 of each piece, in order. */
  pieces: string[];
}

/**
 * The piece size of a blob of `size` bytes: DEFAULTS.pieceSize (16 MiB), doubled until the
 * blob has at most DEFAULTS.maxPieces (1,024) pieces, so a manifest stays small (~48 KB of
 * JSON for 100 GB).
 */
export function pieceSizeFor(size: number): number {
  let pieceSize: number = DEFAULTS.pieceSize;
  while (Math.ceil(size / pieceSize) > DEFAULTS.maxPieces) pieceSize *= 2;
  return pieceSize;
}

/** Pieces of a blob of `size` bytes; 0 for an empty blob. */
export function pieceCount(size: number, pieceSize: number): number {
  return size <= 0 ? 0 : Math.ceil(size / pieceSize);
}

/** Bytes [start, end) of piece `index`. */
export function pieceRange(manifest: Pick<Manifest, 'size' | 'pieceSize'>, index: number): [number, number] {
  const start = index * manifest.pieceSize;
  return [start, Math.min(manifest.size, start + manifest.pieceSize)];
}

/** A blob's pieces without its digest: what a lease holder publishes before the digest is known. */
export type PieceLayout = Pick<Manifest, 'size' | 'pieceSize' | 'pieces'>;

/** Whether two piece lists are the same: size, piece size and every piece digest, in order. */
export function samePieces(a: PieceLayout, b: PieceLayout): boolean {
  return (
    a.size === b.size &&
    a.pieceSize === b.pieceSize &&
    a.pieces.length === b.pieces.length &&
    a.pieces.every((p, i) => p === b.pieces[i])
  );
}

/** Whether two manifests are the same: digest and pieces (see samePieces). */
export function sameManifest(a: Manifest, b: Manifest): boolean {
  return a.digest === b.digest && samePieces(a, b);
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Whether a manifest is self-consistent: hex digests, a positive piece size, one digest per piece. */
export function isValidManifest(value: Manifest): boolean {
  return (
    HEX64.test(value.digest) &&
    Number.isSafeInteger(value.size) &&
    value.size >= 0 &&
    Number.isSafeInteger(value.pieceSize) &&
    value.pieceSize > 0 &&
    Array.isArray(value.pieces) &&
    value.pieces.length === pieceCount(value.size, value.pieceSize) &&
    value.pieces.every((p) => typeof p === 'string' && HEX64.test(p))
  );
}

/** Throws UsageError unless `manifest` is valid and agrees with the expected digest and size. */
export function checkExpectedManifest(manifest: Manifest, sha256: string | undefined, size: number | undefined): void {
  if (!isValidManifest(manifest)) throw new UsageError('the expected manifest is malformed');
  if (sha256 !== undefined && manifest.digest !== sha256) {
    throw new UsageError(`the manifest is of ${manifest.digest}, not of the expected ${sha256}`);
  }
  if (size !== undefined && manifest.size !== size) {
    throw new UsageError(`the manifest says ${manifest.size} bytes, the expected size is ${size}`);
  }
}

/**
 * Names one piece list among the manifests published for a digest over time: a report
 * against a manifest (a node proved it wrong) counts only against that very list, never
 * against one published after it was dropped.
 */
export function manifestFingerprint(manifest: PieceLayout): string {
  return createHash('sha256')
    .update(`loom-manifest:${manifest.size}:${manifest.pieceSize}:${manifest.pieces.join(',')}`)
    .digest('hex');
}
