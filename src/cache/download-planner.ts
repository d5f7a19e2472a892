// What a cached download can take from outside the node: more sources (peers) and the
// identity the fleet already knows for a source. The peer layer implements it
// (src/peer/peer-download.ts); the cache only asks, so it never depends on peers.
import type { LoomError } from '../core/errors.js';
import type { Manifest } from '../core/manifest.js';
import type { BlobDownloadHandle, BlobDownloadResult, SourceSlot } from '../fetch/download.js';
import type { Source } from '../sources/source.js';

export type VerifiedAgainst = 'sha256-pinned' | 'hub-sha256' | 's3-checksum' | 'first-origin-fetch';

export interface DownloadPlanner {
  /** A digest the fleet records for this source, or undefined; never throws, never waits long. */
  knownDigest(url: string): Promise<string | undefined>;
  /**
   * Inside this node's lock, before downloading: where the bytes come from. `pinned` is a
   * digest the caller vouches for. Undefined: download from the origin alone, as without one.
   * `signal` stops the planning (waiting for another node's first piece) as it stops a download.
   */
  plan(args: {
    url: string;
    origin: Source;
    pinned: string | undefined;
    signal?: AbortSignal;
  }): Promise<PlannedDownload | undefined>;
}

export interface PlannedDownload {
  /** The name of the download among peers: the digest, or the source's id until it is known. */
  id: string;
  expected: { sha256?: string; size?: number; manifest?: Manifest; pinned?: boolean };
  sources: SourceSlot[];
  /** How long the engine waits for a source that can serve a missing piece (asked again at each check). */
  sourceWaitMs: number | (() => number);
  /** A failed download is planned once more (a follower whose leader finished meanwhile). */
  replanOnFailure: boolean;
  /** What the finished blob's digest is checked against (kept with its manifest). */
  verifiedAgainst: VerifiedAgainst;
  started(handle: BlobDownloadHandle): void;
  /** Piece `index` of the blob (`layout`) is on disk and verified; `digest` is its sha256. */
  pieceVerified(index: number, digest: string, layout: { size: number; pieceSize: number }): void;
  /** Body bytes received so far (as the engine reports progress). */
  progress?(transferredBytes: number): void;
  dropped(id: string, reason: LoomError): void;
  /**
   * Without a manifest: the digest a piece with bytes from a peer must have, once known
   * (BlobDownloadParams.pieceDigest); absent: pieces are not checked one by one.
   */
  pieceDigest?(index: number, layout: { size: number; pieceSize: number }): Promise<string | undefined>;
  /**
   * With pieceDigest: the blob's digest from all its piece digests, when a trusted manifest
   * vouches for exactly them (BlobDownloadParams.digestFromPieces); undefined: hash the file.
   */
  digestFromPieces?(pieces: string[], layout: { size: number; pieceSize: number }): Promise<string | undefined>;
  /**
   * A failed download's part is not kept for a resume: it may hold bytes from peers not yet
   * checked, which a rerun from the origin alone (no control plane) would take unchecked.
   */
  discardOnFailure?: boolean;
  /**
   * Bytes from peers are checked as a whole (no manifest, or a pinned digest whose manifest
   * may be forged): a failed download (a peer sent bad bytes, lied about the size, or the
   * manifest listed other bytes) is downloaded again from the origin alone.
   */
  originOnFailure?: boolean;
  /**
   * The bytes are complete: checks them where they could not be checked piece by piece (a
   * follower without a manifest) and publishes what this node now holds. Throws a
   * DigestMismatchError when they cannot be trusted.
   */
  finished(result: BlobDownloadResult): Promise<void>;
  /**
   * With a manifest and a pinned digest: every piece matched the manifest and the whole file
   * hashed to `actual`, not the pin. The manifest lists other bytes than the digest's (it was
   * forged, or published by mistake): the planner tells the fleet. Called before `close`.
   */
  manifestRefuted?(actual: string): Promise<void>;
  /**
   * After a failed plan with `originOnFailure`: the origin's bytes, checked against the pin,
   * and their manifest. The planner publishes it, so the fleet has a good one (in place of a
   * forged one, once that is dropped). Called after `close`.
   */
  originVerified?(manifest: Manifest): Promise<void>;
  close(): Promise<void>;
}
