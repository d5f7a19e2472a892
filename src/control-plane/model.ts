// The control plane's data model and the contract every store keeps. Stores hold facts and
// answer locate ranked and limited themselves (the order is defined in locate.ts), so SQLite
// and Redis give the same answers and no request does work for every holder in JavaScript.
import type { VerifiedAgainst } from './schemas.js';

/** A node as it announced itself in its last heartbeat. */
export interface NodeRecord {
  id: string;
  /** Base URL of the node's agent, where peers fetch blobs (a legacy registration: the node as given). */
  url: string;
  zone: string | undefined;
  /** Uploads the node can still take; locate prefers the least loaded. */
  freeUploadSlots: number;
  /** Epoch ms after which the node is gone from every answer; NEVER for a registration that does not lapse. */
  expiresAt: number;
  /** The node's boot id: replicas recorded under another epoch are dropped when it changes. */
  epoch: string | undefined;
}

/** `expiresAt` of a registration that lives as long as the store (the original tool's /register). */
export const NEVER = Number.MAX_SAFE_INTEGER;

/** A blob: its digest, and the piece digests peers' bytes are checked against (src/core/manifest.ts). */
import type { Manifest } from '../core/manifest.js';
export type { Manifest };

/** A manifest as the control plane keeps it: with what its publisher checked it against. */
export interface StoredManifest extends Manifest {
  verifiedAgainst: VerifiedAgainst;
  /** The node that published it (absent: an admin, an open control plane, or a record from before). */
  publisher?: string | undefined;
}

/** That a node holds a blob, wholly or in part. */
export interface Replica {
  digest: string;
  nodeId: string;
  complete: boolean;
  /** Indexes of the pieces held, for a partial replica. */
  pieces: number[] | undefined;
  updatedAt: number;
}

/** A replica joined with its (live) node, as locate sees it. */
export interface Candidate {
  node: NodeRecord;
  replica: Replica;
}

/** What a locate asks the store for: ranked and limited in the store. */
export interface LocateQuery {
  now: number;
  /** Never answered with itself. */
  asker: string | undefined;
  /** Holders in this zone come first (others too). */
  zone: string | undefined;
  limit: number;
  /** A partial replica not updated for this long is left out. */
  partialTtlMs: number;
  /** Replicas reported this often within the window are left out; absent = no quarantine. */
  quarantine?: Quarantine;
}

/** Reports that keep a replica out of locate answers. */
export interface Quarantine {
  windowMs: number;
  threshold: number;
}

export type ManifestWrite = 'created' | 'unchanged' | 'conflict';
export type SourceWrite = 'created' | 'unchanged' | 'replaced' | 'conflict';

export interface StoreCounts {
  liveNodes: number;
  blobs: number;
  replicas: number;
}

/** A lease on fetching a blob from its origin. */
export interface Lease {
  token: string;
  node: string;
  /** Increases with every grant on the digest: a stale holder's writes can be told apart. */
  fencingToken: number;
  expiresAt: number;
}

export type LeaseGrant = ({ granted: true } & Lease) | { granted: false; holders: Array<Omit<Lease, 'token'>> };

/**
 * The piece digests of a blob its lease holder has hashed so far, named by the source's id
 * while the blob's digest is unknown: `pieces[i]` is the sha256 of piece i (a prefix of the
 * blob's pieces, as the holder hashes them in order). Written under a lease only; a write
 * under an older fencing token than the record's is refused.
 */
export interface PieceRecord {
  size: number;
  pieceSize: number;
  pieces: string[];
  fencingToken: number;
  updatedAt: number;
}

export type PiecesWrite = 'written' | 'stale';

/** A piece record not written for this long is deleted by the sweep (its download is long over). */
export const PIECES_TTL_MS = 60 * 60 * 1000;

/** What a heartbeat did: whether the node's replicas were dropped (new node, lapsed, new epoch). */
export interface HeartbeatOutcome {
  resync: boolean;
}

export interface SweepPolicy {
  partialTtlMs: number;
  reportWindowMs: number;
}

export interface RegistryStore {
  readonly kind: 'sqlite' | 'redis';
  /**
   * Records a heartbeat; the node is live until `node.expiresAt`. A node that is new, whose
   * registration lapsed, or that comes with a new epoch loses the replicas recorded before.
   */
  heartbeat(node: NodeRecord, now: number): Promise<HeartbeatOutcome>;
  /** Removes the node and every replica it held. */
  removeNode(id: string): Promise<boolean>;
  /** Live nodes only. */
  liveNodes(now: number): Promise<NodeRecord[]>;
  /** First writer wins: a different manifest for a known digest is a conflict. */
  putManifest(manifest: StoredManifest): Promise<ManifestWrite>;
  getManifest(digest: string): Promise<StoredManifest | undefined>;
  deleteManifest(digest: string): Promise<boolean>;
  /**
   * Deletes the manifest of `manifest.digest` only if it is still this one (same size,
   * piece size and pieces): a report decided against a manifest never drops the one
   * published after it.
   */
  deleteManifestIf(manifest: Manifest): Promise<boolean>;
  /** Records a replica under the node's current epoch; false when the node is not live. */
  putReplica(replica: Replica, now: number): Promise<boolean>;
  removeReplica(digest: string, nodeId: string): Promise<boolean>;
  /** Live, trusted holders of `digest`, best first, at most `query.limit` (see locate.ts for the order). */
  locate(digest: string, query: LocateQuery): Promise<Candidate[]>;
  /** Maps a source key; an existing mapping to another digest changes only with `replace`. */
  putSource(key: string, digest: string, replace: boolean): Promise<SourceWrite>;
  getSource(key: string): Promise<string | undefined>;
  /** Records piece digests unless the stored record has a newer fencing token ('stale'). */
  putPieces(id: string, record: PieceRecord): Promise<PiecesWrite>;
  getPieces(id: string): Promise<PieceRecord | undefined>;
  /** Records a report against a replica; returns how many distinct reporters it has in the window. */
  report(digest: string, nodeId: string, reporter: string, now: number, windowMs: number): Promise<number>;
  /**
   * Records a report against a replica only if `nodeId` holds one of `digest` (complete or
   * partial) or was already reported under it within the window (so it held one then: a
   * holder that dropped its copy after serving bad bytes still collects its reports). Returns
   * how many distinct reporters it has in the window, or undefined, with nothing stored, for
   * a node that holds no replica: a made-up id would otherwise be kept for the window and read
   * by every locate of the digest.
   */
  reportReplica(
    digest: string,
    nodeId: string,
    reporter: string,
    now: number,
    windowMs: number,
  ): Promise<number | undefined>;
  /** The distinct reporters of `nodeId` under `digest` whose last report is newer than `since`. */
  reporters(digest: string, nodeId: string, since: number): Promise<string[]>;
  /**
   * Grants `node` a lease: its own live one again (renewed), or a new one under `newToken`
   * with the next fencing token when fewer than `slots` live leases are held.
   */
  acquireLease(
    digest: string,
    node: string,
    slots: number,
    ttlMs: number,
    now: number,
    newToken: string,
  ): Promise<LeaseGrant>;
  /** The live lease with this token, if any. */
  getLease(digest: string, token: string, now: number): Promise<Lease | undefined>;
  /** Extends a live lease; undefined when it lapsed or was released. */
  renewLease(digest: string, token: string, ttlMs: number, now: number): Promise<Lease | undefined>;
  releaseLease(digest: string, token: string): Promise<boolean>;
  /**
   * Deletes what has lapsed: nodes (and their replicas), stale partial replicas, old reports,
   * leases, piece records not written for an hour.
   */
  sweep(now: number, policy: SweepPolicy): Promise<void>;
  counts(now: number): Promise<StoreCounts>;
  /** Throws StoreUnavailableError when the store cannot be reached. */
  ping(): Promise<void>;
  /**
   * Why the store's WAL checkpoint fails, while it does (SQLite only; absent: no checkpoint of
   * its own). Requests still work meanwhile, but the WAL grows until a checkpoint works.
   */
  readonly checkpointError?: string | undefined;
  /** Calls `listener` each time checkpointError changes: a new failure, or a checkpoint that works again. */
  onCheckpointChange?(listener: (error: string | undefined) => void): void;
  close(): Promise<void>;
}
