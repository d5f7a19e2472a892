// The default store: one SQLite file (better-sqlite3, WAL), no set-up. Liveness is an
// expiry time written by each heartbeat and checked on every read, so a dead node is gone
// from answers the moment its TTL lapses; the control plane's sweep timer deletes the
// leftovers. Every statement is prepared once. Locate reads a bounded sample of a blob's
// holders from an index and their nodes from a copy of the nodes table this store keeps in
// memory (written through by its heartbeats, removals and sweeps), then ranks in locate.ts:
// one control-plane process per SQLite file. That is enforced: an open store holds a kernel
// lock on `<file>-lock` beside the database (src/core/file-lock.ts), released by close or by
// the death of its process however it dies, and a second store on the file fails at once
// (StoreLockedError), in another process or this one.
// The WAL is checkpointed by a worker thread with a connection of its own: a checkpoint
// syncs the file to disk, and on the event loop (SQLite's automatic checkpoint runs inside
// the commit that fills the WAL) that stalled every request behind it (up to 100 ms here).
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { StoreLockedError, StoreUnavailableError } from '../core/errors.js';
import { lockHolderPid, tryLockFile, type FileLock } from '../core/file-lock.js';
import { sameManifest, type Manifest } from '../core/manifest.js';
import { rankCandidates } from './locate.js';
import { PIECES_TTL_MS } from './model.js';
import type {
  Candidate,
  HeartbeatOutcome,
  Lease,
  LeaseGrant,
  LocateQuery,
  ManifestWrite,
  NodeRecord,
  PieceRecord,
  PiecesWrite,
  RegistryStore,
  Replica,
  SourceWrite,
  StoreCounts,
  StoredManifest,
  SweepPolicy,
} from './model.js';
import type { VerifiedAgainst } from './schemas.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS nodes (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  zone TEXT,
  free_slots INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  epoch TEXT
);
CREATE INDEX IF NOT EXISTS nodes_expiry ON nodes(expires_at);
CREATE TABLE IF NOT EXISTS manifests (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  piece_size INTEGER NOT NULL,
  pieces TEXT NOT NULL,
  verified_against TEXT,
  publisher TEXT
);
CREATE TABLE IF NOT EXISTS replicas (
  digest TEXT NOT NULL,
  node_id TEXT NOT NULL,
  complete INTEGER NOT NULL,
  pieces TEXT,
  updated_at INTEGER NOT NULL,
  epoch TEXT,
  rnd INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (digest, node_id)
);
CREATE INDEX IF NOT EXISTS replicas_node ON replicas(node_id);
CREATE TABLE IF NOT EXISTS sources (
  key TEXT PRIMARY KEY,
  digest TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
  digest TEXT NOT NULL,
  node_id TEXT NOT NULL,
  reporter TEXT NOT NULL,
  at INTEGER NOT NULL,
  PRIMARY KEY (digest, node_id, reporter)
);
CREATE INDEX IF NOT EXISTS reports_at ON reports(at);
CREATE TABLE IF NOT EXISTS leases (
  token TEXT PRIMARY KEY,
  digest TEXT NOT NULL,
  node_id TEXT NOT NULL,
  fencing INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_digest ON leases(digest, expires_at);
CREATE TABLE IF NOT EXISTS source_pieces (
  id TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  piece_size INTEGER NOT NULL,
  pieces TEXT NOT NULL,
  fencing INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_fencing (
  digest TEXT PRIMARY KEY,
  last INTEGER NOT NULL
);
`;

/** Columns added after the first release: a database written by it gains them on open. */
const ADDED_COLUMNS: Array<[table: string, column: string, type: string]> = [
  ['nodes', 'epoch', 'TEXT'],
  ['replicas', 'epoch', 'TEXT'],
  ['manifests', 'verified_against', 'TEXT'],
  ['replicas', 'rnd', 'INTEGER NOT NULL DEFAULT 0'],
  ['manifests', 'publisher', 'TEXT'],
];

/**
 * Indexes on added columns, created once the columns exist. Locate's window covers its
 * columns, so sampling a blob with thousands of holders reads the index alone (half the CPU
 * of the narrower replicas_pick it replaces, measured on 10,000 holders). The sweep finds
 * stale partial replicas through replicas_partial: scanning the table for them (piece lists
 * and all) took 8-37 ms of the event loop every 10 s with 30,000 replicas, 0.2 ms with it.
 */
const LATE_INDEXES = `DROP INDEX IF EXISTS replicas_pick;
CREATE INDEX IF NOT EXISTS replicas_window ON replicas(digest, complete, rnd, node_id, updated_at);
CREATE INDEX IF NOT EXISTS replicas_partial ON replicas(updated_at) WHERE complete = 0;`;

/** How often the checkpoint thread copies the WAL into the database file. */
const CHECKPOINT_INTERVAL_MS = 250;

/** The WAL file is cut back to this size once checkpointed (it is reused from its start). */
const WAL_SIZE_LIMIT = 64 * 1024 * 1024;

// Plain CommonJS, evaluated in the worker: the CLI bundle has no separate file to point at.
// PASSIVE never waits for the store's own connection (nor makes it wait); frames a reader
// still needs are copied by a later round. Closed by a message, so the last connection to
// close (this one) checkpoints what is left and removes the WAL. A failure is posted once,
// not at every round, and so is the first round that works after it.
const CHECKPOINT_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.path, { timeout: 5000 });
let failed = false;
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
    if (failed) parentPort.postMessage({ kind: 'ok' });
    failed = false;
  } catch (err) {
    if (!failed) parentPort.postMessage({ kind: 'error', message: String(err && err.message ? err.message : err) });
    failed = true;
  }
}, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  try { db.close(); } finally { parentPort.close(); }
});
`;

/** Holders of each kind read per locate, at least: exact ranking up to this many holders. */
const MIN_SAMPLE = 64;

/** The range of a replica's random position (its place in the sample order). */
const RND_RANGE = 1_000_000_000;

/** A sampled holder: a complete one's node id, a partial one's [node id, updated_at]. */
type SampleRow = string | [string, number];

/** A window of one kind of a blob's holders from (`>=`) or before (`<`) a random point. */
function window(db: Database.Database, complete: number, from: '>=' | '<'): Database.Statement {
  const statement = db.prepare(
    `SELECT node_id${complete ? '' : ', updated_at'} FROM replicas
     WHERE digest = ? AND complete = ${complete} AND rnd ${from} ? ORDER BY rnd LIMIT ?`,
  );
  return complete ? statement.pluck(true) : statement.raw(true);
}

interface NodeRow {
  id: string;
  url: string;
  zone: string | null;
  free_slots: number;
  expires_at: number;
  epoch: string | null;
}

interface ManifestRow {
  digest: string;
  size: number;
  piece_size: number;
  pieces: string;
  verified_against: string | null;
  publisher: string | null;
}

interface LeaseRow {
  token: string;
  node_id: string;
  fencing: number;
  expires_at: number;
}

export class SqliteStore implements RegistryStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly sql;
  private readonly tx;
  private readonly checkpointer: Worker | undefined;
  /** This store's hold on its file (none in memory), released last by close. */
  private readonly lock: FileLock | undefined;
  /**
   * The nodes table as committed, for locate: looking 64 sampled holders' nodes up in SQLite
   * was two thirds of a locate's CPU (two B-tree searches each). Written only after the
   * transaction that changes the table commits.
   */
  private readonly nodes = new Map<string, NodeRecord>();
  /** The checkpoint thread's failure while it lasts (it keeps trying; a round that works clears it). */
  checkpointError: string | undefined;
  private readonly checkpointListeners: Array<(error: string | undefined) => void> = [];

  constructor(readonly path: string) {
    // Before anything is read: a second store would copy the nodes table and then miss the
    // first one's writes.
    this.lock = lockStore(path);
    try {
      this.db = openDatabase(path);
    } catch (err) {
      this.lock?.release();
      throw err;
    }
    if (this.db.pragma('journal_mode', { simple: true }) === 'wal') {
      this.checkpointer = new Worker(CHECKPOINT_SOURCE, {
        eval: true,
        workerData: {
          path,
          module: createRequire(import.meta.url).resolve('better-sqlite3'),
          intervalMs: CHECKPOINT_INTERVAL_MS,
        },
      });
      // A store nobody closed must not keep the process alive.
      this.checkpointer.unref();
      this.checkpointer.on('message', (message: { kind: 'error'; message: string } | { kind: 'ok' }) => {
        this.setCheckpointError(message.kind === 'error' ? message.message : undefined);
      });
      this.checkpointer.on('error', (err) => {
        this.setCheckpointError(`the checkpoint thread stopped: ${err.message}`);
      });
    }
    const db = this.db;
    this.sql = {
      nodeState: db.prepare('SELECT epoch, expires_at FROM nodes WHERE id = ?'),
      heartbeat: db.prepare(
        `INSERT INTO nodes (id, url, zone, free_slots, expires_at, epoch)
         VALUES (@id, @url, @zone, @freeUploadSlots, @expiresAt, @epoch)
         ON CONFLICT(id) DO UPDATE SET url = excluded.url, zone = excluded.zone, free_slots = excluded.free_slots,
           expires_at = excluded.expires_at, epoch = coalesce(excluded.epoch, nodes.epoch)`,
      ),
      dropNodeReplicas: db.prepare('DELETE FROM replicas WHERE node_id = ?'),
      dropOtherEpochs: db.prepare('DELETE FROM replicas WHERE node_id = ? AND epoch IS NOT ?'),
      deleteNode: db.prepare('DELETE FROM nodes WHERE id = ?'),
      liveNodes: db.prepare(
        'SELECT id, url, zone, free_slots, expires_at, epoch FROM nodes WHERE expires_at > ? ORDER BY id',
      ),
      getManifest: db.prepare('SELECT * FROM manifests WHERE digest = ?'),
      insertManifest: db.prepare(
        'INSERT INTO manifests (digest, size, piece_size, pieces, verified_against, publisher) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      deleteManifest: db.prepare('DELETE FROM manifests WHERE digest = ?'),
      // The replica takes the node's epoch, and is written only while the node is live.
      putReplica: db.prepare(
        `INSERT INTO replicas (digest, node_id, complete, pieces, updated_at, epoch, rnd)
         SELECT @digest, id, @complete, @pieces, @updatedAt, epoch, @rnd FROM nodes WHERE id = @nodeId AND expires_at > @now
         ON CONFLICT(digest, node_id) DO UPDATE SET complete = excluded.complete, pieces = excluded.pieces,
           updated_at = excluded.updated_at, epoch = excluded.epoch`,
      ),
      removeReplica: db.prepare('DELETE FROM replicas WHERE digest = ? AND node_id = ?'),
      // Locate is the hot path, and a blob may have thousands of holders. One kind of
      // holder (complete, else partial) is read at a time as a window of `sample` rows from
      // a random point of its index (wrapping round; every holder when there are at most
      // `sample`), the kind written into the text (a bound number is a double, and comparing
      // it with the index's integers cost more than the rest of the read). Complete holders
      // come as bare ids (pluck: half the CPU of a row array each), partial ones as [id,
      // updated_at] arrays. Piece lists are read only for the partial rows returned.
      windowFrom: [0, 1].map((complete) => window(db, complete, '>=')),
      windowBefore: [0, 1].map((complete) => window(db, complete, '<')),
      quarantined: db
        .prepare('SELECT node_id FROM reports WHERE digest = ? AND at > ? GROUP BY node_id HAVING count(*) >= ?')
        .pluck(true),
      allNodes: db.prepare('SELECT id, url, zone, free_slots, expires_at, epoch FROM nodes'),
      replicaPieces: db.prepare('SELECT pieces FROM replicas WHERE digest = ? AND node_id = ?').pluck(true),
      getSource: db.prepare('SELECT digest FROM sources WHERE key = ?'),
      putSource: db.prepare(
        `INSERT INTO sources (key, digest, updated_at) VALUES (?, ?, ?)
         ON CONFLICT(key) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at`,
      ),
      report: db.prepare(
        `INSERT INTO reports (digest, node_id, reporter, at) VALUES (?, ?, ?, ?)
         ON CONFLICT(digest, node_id, reporter) DO UPDATE SET at = excluded.at`,
      ),
      reportCount: db.prepare('SELECT count(*) AS n FROM reports WHERE digest = ? AND node_id = ? AND at > ?'),
      holdsReplica: db.prepare('SELECT 1 FROM replicas WHERE digest = ? AND node_id = ?').pluck(true),
      reporters: db
        .prepare('SELECT reporter FROM reports WHERE digest = ? AND node_id = ? AND at > ? ORDER BY reporter')
        .pluck(true),
      liveLeases: db.prepare(
        'SELECT token, node_id, fencing, expires_at FROM leases WHERE digest = ? AND expires_at > ? ORDER BY fencing',
      ),
      getLease: db.prepare(
        'SELECT token, node_id, fencing, expires_at FROM leases WHERE digest = ? AND token = ? AND expires_at > ?',
      ),
      renewLease: db.prepare('UPDATE leases SET expires_at = ? WHERE digest = ? AND token = ? AND expires_at > ?'),
      deleteLease: db.prepare('DELETE FROM leases WHERE digest = ? AND token = ?'),
      deleteLapsedLeases: db.prepare('DELETE FROM leases WHERE digest = ? AND expires_at <= ?'),
      nextFencing: db.prepare(
        `INSERT INTO lease_fencing (digest, last) VALUES (?, 1)
         ON CONFLICT(digest) DO UPDATE SET last = last + 1 RETURNING last`,
      ),
      insertLease: db.prepare(
        'INSERT INTO leases (token, digest, node_id, fencing, expires_at) VALUES (?, ?, ?, ?, ?)',
      ),
      sweepReplicasOfExpired: db.prepare(
        'DELETE FROM replicas WHERE node_id IN (SELECT id FROM nodes WHERE expires_at <= ?)',
      ),
      sweepNodes: db.prepare('DELETE FROM nodes WHERE expires_at <= ?'),
      sweepPartials: db.prepare('DELETE FROM replicas WHERE complete = 0 AND updated_at <= ?'),
      sweepReports: db.prepare('DELETE FROM reports WHERE at <= ?'),
      sweepLeases: db.prepare('DELETE FROM leases WHERE expires_at <= ?'),
      getPieces: db.prepare('SELECT size, piece_size, pieces, fencing, updated_at FROM source_pieces WHERE id = ?'),
      putPieces: db.prepare(
        `INSERT INTO source_pieces (id, size, piece_size, pieces, fencing, updated_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET size = excluded.size, piece_size = excluded.piece_size,
           pieces = excluded.pieces, fencing = excluded.fencing, updated_at = excluded.updated_at
         WHERE excluded.fencing >= source_pieces.fencing`,
      ),
      sweepPieces: db.prepare('DELETE FROM source_pieces WHERE updated_at <= ?'),
      countNodes: db.prepare('SELECT count(*) AS n FROM nodes WHERE expires_at > ?'),
      countBlobs: db.prepare('SELECT count(*) AS n FROM manifests'),
      countReplicas: db.prepare(
        'SELECT count(*) AS n FROM replicas r JOIN nodes n ON n.id = r.node_id WHERE n.expires_at > ?',
      ),
      ping: db.prepare('SELECT 1'),
    };
    for (const row of this.sql.allNodes.all() as NodeRow[]) this.nodes.set(row.id, nodeOf(row));
    // Shared by report and reportReplica (which checks first that the node held a replica).
    const reportsSince = (digest: string, nodeId: string, since: number): number =>
      (this.sql.reportCount.get(digest, nodeId, since) as { n: number }).n;
    const recordReport = (digest: string, nodeId: string, reporter: string, now: number, windowMs: number): number => {
      this.sql.report.run(digest, nodeId, reporter, now);
      return reportsSince(digest, nodeId, now - windowMs);
    };
    this.tx = {
      heartbeat: db.transaction((node: NodeRecord, now: number): HeartbeatOutcome & { epoch: string | undefined } => {
        const old = this.sql.nodeState.get(node.id) as { epoch: string | null; expires_at: number } | undefined;
        this.sql.heartbeat.run({ ...node, zone: node.zone ?? null, epoch: node.epoch ?? null });
        // The row keeps its epoch when the heartbeat names none (coalesce in the upsert).
        const epoch = node.epoch ?? old?.epoch ?? undefined;
        if (!old || old.expires_at <= now) {
          this.sql.dropNodeReplicas.run(node.id);
          return { resync: true, epoch };
        }
        if (node.epoch !== undefined && node.epoch !== old.epoch) {
          this.sql.dropOtherEpochs.run(node.id, node.epoch);
          return { resync: true, epoch };
        }
        return { resync: false, epoch };
      }),
      removeNode: db.transaction((id: string): boolean => {
        this.sql.dropNodeReplicas.run(id);
        return this.sql.deleteNode.run(id).changes > 0;
      }),
      putManifest: db.transaction((manifest: StoredManifest): ManifestWrite => {
        const existing = this.manifestOf(manifest.digest);
        if (existing) return sameManifest(existing, manifest) ? 'unchanged' : 'conflict';
        this.sql.insertManifest.run(
          manifest.digest,
          manifest.size,
          manifest.pieceSize,
          JSON.stringify(manifest.pieces),
          manifest.verifiedAgainst,
          manifest.publisher ?? null,
        );
        return 'created';
      }),
      putSource: db.transaction((key: string, digest: string, replace: boolean): SourceWrite => {
        const existing = (this.sql.getSource.get(key) as { digest: string } | undefined)?.digest;
        if (existing === digest) return 'unchanged';
        if (existing !== undefined && !replace) return 'conflict';
        this.sql.putSource.run(key, digest, Date.now());
        return existing === undefined ? 'created' : 'replaced';
      }),
      deleteManifestIf: db.transaction((manifest: Manifest): boolean => {
        const existing = this.manifestOf(manifest.digest);
        if (!existing || !sameManifest(existing, manifest)) return false;
        return this.sql.deleteManifest.run(manifest.digest).changes > 0;
      }),
      report: db.transaction(recordReport),
      reportReplica: db.transaction(
        (digest: string, nodeId: string, reporter: string, now: number, windowMs: number): number | undefined =>
          this.sql.holdsReplica.get(digest, nodeId) !== undefined || reportsSince(digest, nodeId, now - windowMs) > 0
            ? recordReport(digest, nodeId, reporter, now, windowMs)
            : undefined,
      ),
      acquireLease: db.transaction(
        (digest: string, node: string, slots: number, ttlMs: number, now: number, newToken: string): LeaseGrant => {
          this.sql.deleteLapsedLeases.run(digest, now);
          const live = (this.sql.liveLeases.all(digest, now) as LeaseRow[]).map(toLease);
          const expiresAt = now + ttlMs;
          const own = live.find((l) => l.node === node);
          if (own) {
            this.sql.renewLease.run(expiresAt, digest, own.token, now);
            return { granted: true, ...own, expiresAt };
          }
          if (live.length >= slots) {
            return {
              granted: false,
              holders: live.map((l) => ({ node: l.node, fencingToken: l.fencingToken, expiresAt: l.expiresAt })),
            };
          }
          const fencingToken = (this.sql.nextFencing.get(digest) as { last: number }).last;
          this.sql.insertLease.run(newToken, digest, node, fencingToken, expiresAt);
          return { granted: true, token: newToken, node, fencingToken, expiresAt };
        },
      ),
      renewLease: db.transaction((digest: string, token: string, ttlMs: number, now: number): Lease | undefined => {
        const row = this.sql.getLease.get(digest, token, now) as LeaseRow | undefined;
        if (!row) return undefined;
        const expiresAt = now + ttlMs;
        this.sql.renewLease.run(expiresAt, digest, token, now);
        return { ...toLease(row), expiresAt };
      }),
      sweep: db.transaction((now: number, policy: SweepPolicy) => {
        this.sql.sweepReplicasOfExpired.run(now);
        this.sql.sweepNodes.run(now);
        this.sql.sweepPartials.run(now - policy.partialTtlMs);
        this.sql.sweepReports.run(now - policy.reportWindowMs);
        this.sql.sweepLeases.run(now);
        this.sql.sweepPieces.run(now - PIECES_TTL_MS);
      }),
    };
  }

  private run<T>(fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(
        new StoreUnavailableError(`the SQLite store ${this.path} failed: ${(err as Error).message}`, { cause: err }),
      );
    }
  }

  heartbeat(node: NodeRecord, now: number): Promise<HeartbeatOutcome> {
    return this.run(() => {
      const { resync, epoch } = this.tx.heartbeat(node, now);
      this.nodes.set(node.id, { ...node, epoch });
      return { resync };
    });
  }

  removeNode(id: string): Promise<boolean> {
    return this.run(() => {
      const removed = this.tx.removeNode(id);
      this.nodes.delete(id);
      return removed;
    });
  }

  liveNodes(now: number): Promise<NodeRecord[]> {
    return this.run(() => (this.sql.liveNodes.all(now) as NodeRow[]).map(nodeOf));
  }

  putManifest(manifest: StoredManifest): Promise<ManifestWrite> {
    return this.run(() => this.tx.putManifest(manifest));
  }

  getManifest(digest: string): Promise<StoredManifest | undefined> {
    return this.run(() => this.manifestOf(digest));
  }

  deleteManifest(digest: string): Promise<boolean> {
    return this.run(() => this.sql.deleteManifest.run(digest).changes > 0);
  }

  deleteManifestIf(manifest: Manifest): Promise<boolean> {
    return this.run(() => this.tx.deleteManifestIf(manifest));
  }

  private manifestOf(digest: string): StoredManifest | undefined {
    const row = this.sql.getManifest.get(digest) as ManifestRow | undefined;
    return (
      row && {
        digest: row.digest,
        size: row.size,
        pieceSize: row.piece_size,
        pieces: JSON.parse(row.pieces) as string[],
        // Written before the field existed: nothing says what it was checked against.
        verifiedAgainst: (row.verified_against ?? 'first-origin-fetch') as VerifiedAgainst,
        ...(row.publisher !== null ? { publisher: row.publisher } : {}),
      }
    );
  }

  putReplica(replica: Replica, now: number): Promise<boolean> {
    return this.run(
      () =>
        this.sql.putReplica.run({
          digest: replica.digest,
          nodeId: replica.nodeId,
          complete: replica.complete ? 1 : 0,
          pieces: replica.pieces ? JSON.stringify(replica.pieces) : null,
          updatedAt: replica.updatedAt,
          now,
          rnd: Math.floor(Math.random() * RND_RANGE),
        }).changes > 0,
    );
  }

  removeReplica(digest: string, nodeId: string): Promise<boolean> {
    return this.run(() => this.sql.removeReplica.run(digest, nodeId).changes > 0);
  }

  locate(digest: string, query: LocateQuery): Promise<Candidate[]> {
    return this.run(() => {
      const sample = Math.max(MIN_SAMPLE, 4 * query.limit);
      const quarantined = query.quarantine
        ? new Set(
            this.sql.quarantined.all(
              digest,
              query.now - query.quarantine.windowMs,
              query.quarantine.threshold,
            ) as string[],
          )
        : undefined;
      const partialSince = query.now - query.partialTtlMs;
      const candidates: Candidate[] = [];
      const add = (complete: boolean): void => {
        const kind = complete ? 1 : 0;
        const start = Math.floor(Math.random() * RND_RANGE);
        const rows = this.sql.windowFrom[kind]!.all(digest, start, sample) as SampleRow[];
        if (rows.length < sample)
          rows.push(...(this.sql.windowBefore[kind]!.all(digest, start, sample - rows.length) as SampleRow[]));
        for (const row of rows) {
          // A complete replica's last update is not used (Redis does not keep it either).
          const id = typeof row === 'string' ? row : row[0];
          const updatedAt = typeof row === 'string' ? 0 : row[1];
          const node = this.nodes.get(id);
          if (!node || node.expiresAt <= query.now || id === query.asker || quarantined?.has(id)) continue;
          if (!complete && updatedAt <= partialSince) continue;
          candidates.push({ node, replica: { digest, nodeId: id, complete, pieces: undefined, updatedAt } });
        }
      };
      add(true);
      // Partial holders rank after every complete one: read only when those fall short.
      if (candidates.length < query.limit) add(false);
      const ranked = rankCandidates(candidates, query);
      for (const candidate of ranked) {
        if (candidate.replica.complete) continue;
        const pieces = this.sql.replicaPieces.get(digest, candidate.node.id) as string | null;
        candidate.replica.pieces = pieces ? (JSON.parse(pieces) as number[]) : undefined;
      }
      return ranked;
    });
  }

  putSource(key: string, digest: string, replace: boolean): Promise<SourceWrite> {
    return this.run(() => this.tx.putSource(key, digest, replace));
  }

  getSource(key: string): Promise<string | undefined> {
    return this.run(() => (this.sql.getSource.get(key) as { digest: string } | undefined)?.digest);
  }

  reporters(digest: string, nodeId: string, since: number): Promise<string[]> {
    return this.run(() => this.sql.reporters.all(digest, nodeId, since) as string[]);
  }

  report(digest: string, nodeId: string, reporter: string, now: number, windowMs: number): Promise<number> {
    return this.run(() => this.tx.report(digest, nodeId, reporter, now, windowMs));
  }

  reportReplica(
    digest: string,
    nodeId: string,
    reporter: string,
    now: number,
    windowMs: number,
  ): Promise<number | undefined> {
    return this.run(() => this.tx.reportReplica(digest, nodeId, reporter, now, windowMs));
  }

  putPieces(id: string, record: PieceRecord): Promise<PiecesWrite> {
    return this.run(() => {
      const { changes } = this.sql.putPieces.run(
        id,
        record.size,
        record.pieceSize,
        JSON.stringify(record.pieces),
        record.fencingToken,
        record.updatedAt,
      );
      return changes > 0 ? 'written' : 'stale';
    });
  }

  getPieces(id: string): Promise<PieceRecord | undefined> {
    return this.run(() => {
      const row = this.sql.getPieces.get(id) as
        { size: number; piece_size: number; pieces: string; fencing: number; updated_at: number } | undefined;
      if (!row) return undefined;
      return {
        size: row.size,
        pieceSize: row.piece_size,
        pieces: JSON.parse(row.pieces) as string[],
        fencingToken: row.fencing,
        updatedAt: row.updated_at,
      };
    });
  }

  acquireLease(
    digest: string,
    node: string,
    slots: number,
    ttlMs: number,
    now: number,
    newToken: string,
  ): Promise<LeaseGrant> {
    return this.run(() => this.tx.acquireLease.immediate(digest, node, slots, ttlMs, now, newToken));
  }

  getLease(digest: string, token: string, now: number): Promise<Lease | undefined> {
    return this.run(() => {
      const row = this.sql.getLease.get(digest, token, now) as LeaseRow | undefined;
      return row && toLease(row);
    });
  }

  renewLease(digest: string, token: string, ttlMs: number, now: number): Promise<Lease | undefined> {
    return this.run(() => this.tx.renewLease.immediate(digest, token, ttlMs, now));
  }

  releaseLease(digest: string, token: string): Promise<boolean> {
    return this.run(() => this.sql.deleteLease.run(digest, token).changes > 0);
  }

  sweep(now: number, policy: SweepPolicy): Promise<void> {
    return this.run(() => {
      this.tx.sweep(now, policy);
      for (const [id, node] of this.nodes) if (node.expiresAt <= now) this.nodes.delete(id);
    });
  }

  counts(now: number): Promise<StoreCounts> {
    return this.run(() => ({
      liveNodes: (this.sql.countNodes.get(now) as { n: number }).n,
      blobs: (this.sql.countBlobs.get() as { n: number }).n,
      replicas: (this.sql.countReplicas.get(now) as { n: number }).n,
    }));
  }

  ping(): Promise<void> {
    return this.run(() => {
      this.sql.ping.get();
    });
  }

  onCheckpointChange(listener: (error: string | undefined) => void): void {
    this.checkpointListeners.push(listener);
  }

  private setCheckpointError(error: string | undefined): void {
    if (error === this.checkpointError) return;
    this.checkpointError = error;
    for (const listener of this.checkpointListeners) listener(error);
  }

  async close(): Promise<void> {
    this.db.close();
    const worker = this.checkpointer;
    if (worker) {
      // Closed last, the checkpoint thread's connection copies what is left and removes the WAL.
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      worker.ref(); // this wait keeps the process alive until the thread is done
      worker.postMessage('close');
      await exited;
    }
    // Only now may another store open the file: the WAL is written back and gone.
    this.lock?.release();
  }
}

/**
 * Takes the lock of the store at `path` (none in memory): `<file>-lock` beside the database,
 * named after the file's real path (as SQLite names its WAL), so a link to it finds the same
 * lock. Throws StoreLockedError when another store holds it.
 */
function lockStore(path: string): FileLock | undefined {
  if (path === '' || path === ':memory:') return undefined;
  let lockPath = `${path}-lock`;
  let lock: FileLock | undefined;
  try {
    let real: string;
    try {
      real = realpathSync(path);
    } catch {
      real = join(realpathSync(dirname(path)), basename(path)); // a new database
    }
    lockPath = `${real}-lock`;
    lock = tryLockFile(Database, lockPath);
  } catch (err) {
    throw new StoreUnavailableError(`cannot lock the SQLite store ${path} (${lockPath}): ${(err as Error).message}`, {
      cause: err,
      path,
    });
  }
  if (lock) return lock;
  const pid = lockHolderPid(lockPath);
  const holder =
    pid === process.pid
      ? `another store in this process (pid ${pid})`
      : `another process${pid === undefined ? '' : ` (pid ${pid})`}`;
  throw new StoreLockedError(`the SQLite store ${path} is in use by ${holder}: one control plane per SQLite file`, {
    path,
    hint:
      'stop the other control plane, give this one another file (--store sqlite:PATH), ' +
      'or run several control planes on one Redis (--store redis://HOST:PORT/DB)',
  });
}

/** Opens the database, in WAL mode where the file allows, with the schema brought up to date. */
function openDatabase(path: string): Database.Database {
  const db = new Database(path, { timeout: 5_000 });
  try {
    if (db.pragma('journal_mode = WAL', { simple: true }) === 'wal') {
      // Checkpoints happen on the checkpoint thread, never inside a request's commit.
      db.pragma('wal_autocheckpoint = 0');
      db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT}`);
    }
    db.pragma('synchronous = NORMAL');
    db.exec(SCHEMA);
    for (const [table, column, type] of ADDED_COLUMNS) {
      const columns = db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>;
      if (!columns.some((c) => c.name === column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
    }
    db.exec(LATE_INDEXES);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

function nodeOf(row: NodeRow): NodeRecord {
  return {
    id: row.id,
    url: row.url,
    zone: row.zone ?? undefined,
    freeUploadSlots: row.free_slots,
    expiresAt: row.expires_at,
    epoch: row.epoch ?? undefined,
  };
}

function toLease(row: LeaseRow): Lease {
  return { token: row.token, node: row.node_id, fencingToken: row.fencing, expiresAt: row.expires_at };
}
