// The one table of defaults: the fetch engine, the node cache, the registry of --serve, the
// control plane, the agent, fetching from peers and the Hub. Every option elsewhere
// documents itself against these names, flag help prints them (shownDefault), and the
// README's "Defaults" section lists the same values (test/core/defaults.test.ts keeps the
// two in step). A name's suffix says its unit: `Ms` a duration, `Size`/`Bytes`/`BodyLimit`
// a size, `BytesPerSecond` a rate.
import { formatDuration, formatSize } from './units.js';

export const DEFAULTS = {
  /** Chunk: the unit of planning, splitting and journaling. 10 MiB like hf_transfer. */
  chunkSize: 10 * 1024 * 1024,
  /** Requests in flight per file. 16 is where loopback and object stores stop gaining. */
  workers: 16,
  minWorkers: 1,
  maxWorkers: 256,
  /** Redirects followed before giving up (browsers and curl use 20; 10 is plenty for CDNs). */
  maxRedirects: 10,
  /** A request that sends no byte for this long is aborted and retried (AWS CRT uses 30 s). */
  stallTimeoutMs: 30_000,
  retry: {
    /** Attempts per chunk, the first included. */
    attempts: 6,
    baseDelayMs: 1_000,
    factor: 2,
    maxDelayMs: 30_000,
    /** A Retry-After longer than this fails now instead of idling a GPU node. */
    maxRetryAfterMs: 120_000,
  },
  /** Idle workers split an in-flight range only if each half is at least this big. */
  minSplitSize: 1024 * 1024,
  /** How often the resume journal is written while bytes arrive. */
  journalIntervalMs: 500,
  /** Size of the reads that hash the finished prefix of the file. */
  hashReadSize: 1024 * 1024,
  /** Piece: the unit of verification and of a manifest; doubled until a blob has <= maxPieces. */
  pieceSize: 16 * 1024 * 1024,
  maxPieces: 1024,
  /** Without a terminal, a progress line this often (and at every tenth of the file). */
  progressLineIntervalMs: 5_000,

  cache: {
    /** How long the origin may take to say whether a cached copy is fresh; then it is served. */
    revalidateTimeoutMs: 5_000,
  },

  /** `loom fetch --serve`: the original tool's registry address (also LOOM_SERVE_LISTEN). */
  serveListen: '127.0.0.1:3000',

  controlPlane: {
    listen: '127.0.0.1:7070',
    /** A node not heard from for this long is not located. */
    nodeTtlMs: 30_000,
    /** A partial replica not updated for this long is not located. */
    partialTtlMs: 30_000,
    /** Reports of a bad blob count toward quarantine within this window. */
    reportWindowMs: 10 * 60_000,
    reportThreshold: 3,
    /** An origin-fetch lease lasts this long unless renewed. */
    leaseTtlMs: 5_000,
    sweepIntervalMs: 10_000,
    bodyLimit: 64 * 1024,
    /** A 100 GB blob's manifest: 1,024 piece digests of 67 bytes with room to spare. */
    manifestBodyLimit: 256 * 1024,
    /** Holders a locate answers with, unless `limit` says otherwise. */
    locateLimit: 8,
    /** Nodes `/locate/:model` answers with at most. */
    legacyLocateLimit: 100,
    redisPrefix: 'loom',
    /** A Redis command not answered within this is a store failure (503). */
    redisTimeoutMs: 2_000,
    /**
     * How long a control plane on Redis reuses a node record for locate: the age of a
     * node's load in an answer at most (removals and re-registrations are sent at once).
     */
    redisNodeCacheMs: 2_000,
    /** A client's (agent's, fetch's) request to the control plane. */
    requestTimeoutMs: 2_000,
  },

  agent: {
    listen: '0.0.0.0:7071',
    /** How often the cache is diffed against what was announced (fs.watch makes it sooner). */
    scanIntervalMs: 5_000,
    /** Heartbeat interval until the control plane states its own. */
    heartbeatIntervalMs: 10_000,
    /** First retry after a failed heartbeat; doubles up to the heartbeat interval. */
    retryBaseMs: 1_000,
    /**
     * Everything is announced again this often, even unchanged: a control plane that restarted
     * on an empty store answers heartbeats as if nothing happened, and this is how it learns.
     */
    reannounceIntervalMs: 5 * 60_000,
    /**
     * Uploads at once; peers above it get 503 and go elsewhere. 64: when a fleet cold-starts,
     * every other node takes the leader's pieces at once (4 connections each); at 16 most of
     * them were refused and backed off (8 nodes, 128 MiB: 24 s against 11 s for the leader).
     */
    maxUploads: 64,
    /**
     * Size of each file read: large, so a multi-GB body is a few thousand reads, not millions.
     * Measured on loopback (256 MiB, one connection): 512 KiB-1 MiB beat 64 KiB by ~3x and
     * 4 MiB by ~2.5x (larger writes than the socket takes at once are copied again).
     */
    readChunkBytes: 1024 * 1024,
    /** Idle keep-alive connections are kept this long (peers fetch piece after piece). */
    keepAliveTimeoutMs: 30_000,
    /**
     * A connection on which nothing moves for this long is closed: a peer that stops reading
     * mid-body would otherwise hold an upload slot for ever.
     */
    idleTimeoutMs: 60_000,
    /** How long close() lets uploads in flight finish before cutting them. */
    closeGraceMs: 5_000,
  },

  peers: {
    /** Holders asked for at most. */
    maxPeers: 8,
    /** Connections to one peer. */
    connectionsPerPeer: 4,
    /** A request to a peer that sends nothing this long is aborted. */
    stallTimeoutMs: 5_000,
    /** How long a node that cannot lead (`--no-origin`) waits for a first holder of the blob. */
    followerWaitMs: 15_000,
    /**
     * A lease holder that received no byte for this long stops renewing its lease, so another
     * node leads; while it receives bytes, the others wait for its pieces however long.
     */
    leaseIdleMs: 15_000,
    /** How long a follower waits for the leader to publish the digest it checks against. */
    publishWaitMs: 60_000,
    /**
     * How often holders are asked again while downloading; every fourth time only while the
     * peers known hold 8+ pieces this node lacks (swarm.ts).
     */
    refreshMs: 250,
    /** A peer slower than this (after paceGraceMs) is dropped: far below any peer on the fleet's network. */
    minBytesPerSecond: 512 * 1024,
    paceGraceMs: 3_000,
  },

  /**
   * Pages of a Hub tree listing or an S3 ListObjectsV2 followed at most: 100M keys at S3's
   * 1,000 a page; only a server that pages for ever gets there.
   */
  maxListPages: 100_000,

  hub: {
    endpoint: 'https://huggingface.co',
    revision: 'main',
  },
} as const;

/**
 * A default as flag help and the README show it, by its name's unit: `30s`, `10MiB`,
 * `512KiB/s`, else the value itself.
 */
export function shownDefault(name: string, value: number | string): string {
  if (typeof value === 'string') return value;
  if (/BytesPerSecond$/.test(name)) return `${formatSize(value)}/s`;
  if (/Ms$/.test(name)) return formatDuration(value);
  if (/(Size|Bytes|BodyLimit|bodyLimit)$/.test(name)) return formatSize(value);
  return String(value);
}

/** Every default as `[dotted name, shown value]`, in the table's order. */
export function defaultsTable(): Array<[string, string]> {
  const rows: Array<[string, string]> = [];
  const walk = (prefix: string, table: object): void => {
    for (const [name, value] of Object.entries(table)) {
      const path = prefix + name;
      if (typeof value === 'object' && value !== null) walk(`${path}.`, value as object);
      else rows.push([path, shownDefault(name, value as number | string)]);
    }
  };
  walk('', DEFAULTS);
  return rows;
}
