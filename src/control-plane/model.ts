// The control plane's data model and the contract every store keeps. Stores hold facts;
// the rules that choose peers (ranking, quarantine threshold) live in locate.ts so that
// SQLite and Redis give the same answers.

/** A node as it announced itself in its last heartbeat. */
export interface NodeRecord {
  id: string;
  /** Base URL of the node's agent, where peers fetch blobs. */
  url: string;
  zone: string | undefined;
  /** Uploads the node can still take; locate prefers the least loaded. */
  freeUploadSlots: number;
  /** Epoch ms after which the node is gone from every answer. */
  expiresAt: number;
}

/** A blob: its digest, and the piece digests peers' bytes are checked against (src/core/manifest.ts). */
import type { Manifest } from '../core/manifest.js';
export type { Manifest };

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

/** Reports that keep a replica out of locate answers. */
export interface Quarantine {
  windowMs: number;
  threshold: number;
}

export type ManifestWrite = 'created' | 'unchanged' | 'conflict';

export interface StoreCounts {
  liveNodes: number;
  blobs: number;
  replicas: number;
}

export interface RegistryStore {
  readonly kind: 'sqlite' | 'redis';
  /** Records a heartbeat; the node is live until `node.expiresAt`. */
  heartbeat(node: NodeRecord): Promise<void>;
  removeNode(id: string): Promise<boolean>;
  /** Live nodes only. */
  liveNodes(now: number): Promise<NodeRecord[]>;
  /** Whether one node's heartbeat has not lapsed at `now`. */
  isLive(id: string, now: number): Promise<boolean>;
  /** First writer wins: a different manifest for a known digest is a conflict. */
  putManifest(manifest: Manifest): Promise<ManifestWrite>;
  getManifest(digest: string): Promise<Manifest | undefined>;
  putReplica(replica: Replica): Promise<void>;
  removeReplica(digest: string, nodeId: string): Promise<boolean>;
  /**
   * Replicas of `digest` whose node is live at `now`; with `quarantine`, without those
   * reported at least `threshold` times within the window.
   */
  candidates(digest: string, now: number, quarantine?: Quarantine): Promise<Candidate[]>;
  putSource(key: string, digest: string): Promise<void>;
  getSource(key: string): Promise<string | undefined>;
  /** Records a report against a replica; returns how many distinct reporters it has in the window. */
  report(digest: string, nodeId: string, reporter: string, now: number, windowMs: number): Promise<number>;
  counts(now: number): Promise<StoreCounts>;
  /** Throws StoreUnavailableError when the store cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
