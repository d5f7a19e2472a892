// The default store: one SQLite file (better-sqlite3, WAL), no set-up. Liveness is an
// expiry time written by each heartbeat and checked on every read, so a dead node is gone
// from answers the moment its TTL lapses; a sweep deletes the leftovers.
import Database from 'better-sqlite3';
import { StoreUnavailableError } from '../core/errors.js';
import type {
  Candidate,
  Manifest,
  ManifestWrite,
  NodeRecord,
  Quarantine,
  RegistryStore,
  Replica,
  StoreCounts,
} from './model.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS nodes (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  zone TEXT,
  free_slots INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_expiry ON nodes(expires_at);
CREATE TABLE IF NOT EXISTS manifests (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  piece_size INTEGER NOT NULL,
  pieces TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replicas (
  digest TEXT NOT NULL,
  node_id TEXT NOT NULL,
  complete INTEGER NOT NULL,
  pieces TEXT,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (digest, node_id)
);
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
`;

/** A locate row: id, url, zone, free_slots, expires_at, complete, pieces, updated_at. */
type CandidateTuple = [string, string, string | null, number, number, number, string | null, number];

interface NodeRow {
  id: string;
  url: string;
  zone: string | null;
  free_slots: number;
  expires_at: number;
}

export class SqliteStore implements RegistryStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly statements;

  constructor(readonly path: string) {
    this.db = new Database(path, { timeout: 5_000 });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
    this.statements = {
      heartbeat: this.db.prepare(
        `INSERT INTO nodes (id, url, zone, free_slots, expires_at) VALUES (@id, @url, @zone, @freeUploadSlots, @expiresAt)
         ON CONFLICT(id) DO UPDATE SET url = excluded.url, zone = excluded.zone, free_slots = excluded.free_slots,
           expires_at = excluded.expires_at`,
      ),
      // Locate is the hot path: rows as arrays (raw) skip building an object per row.
      candidates: this.db
        .prepare(
          `SELECT n.id, n.url, n.zone, n.free_slots, n.expires_at, r.complete, r.pieces, r.updated_at
           FROM replicas r JOIN nodes n ON n.id = r.node_id
           WHERE r.digest = ? AND n.expires_at > ?`,
        )
        .raw(true),
      candidatesTrusted: this.db
        .prepare(
          `SELECT n.id, n.url, n.zone, n.free_slots, n.expires_at, r.complete, r.pieces, r.updated_at
           FROM replicas r JOIN nodes n ON n.id = r.node_id
           WHERE r.digest = ? AND n.expires_at > ?
             AND (SELECT count(*) FROM reports p WHERE p.digest = r.digest AND p.node_id = r.node_id AND p.at > ?) < ?`,
        )
        .raw(true),
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

  heartbeat(node: NodeRecord): Promise<void> {
    return this.run(() => {
      this.statements.heartbeat.run({ ...node, zone: node.zone ?? null });
    });
  }

  removeNode(id: string): Promise<boolean> {
    return this.run(() => {
      const removed = this.db.prepare('DELETE FROM nodes WHERE id = ?').run(id).changes > 0;
      this.db.prepare('DELETE FROM replicas WHERE node_id = ?').run(id);
      return removed;
    });
  }

  liveNodes(now: number): Promise<NodeRecord[]> {
    return this.run(() => {
      this.sweep(now);
      const rows = this.db
        .prepare('SELECT id, url, zone, free_slots, expires_at FROM nodes WHERE expires_at > ? ORDER BY id')
        .all(now) as NodeRow[];
      return rows.map((r) => ({
        id: r.id,
        url: r.url,
        zone: r.zone ?? undefined,
        freeUploadSlots: r.free_slots,
        expiresAt: r.expires_at,
      }));
    });
  }

  isLive(id: string, now: number): Promise<boolean> {
    return this.run(
      () => this.db.prepare('SELECT 1 FROM nodes WHERE id = ? AND expires_at > ?').get(id, now) !== undefined,
    );
  }

  putManifest(manifest: Manifest): Promise<ManifestWrite> {
    return this.run(() =>
      this.db.transaction((): ManifestWrite => {
        const existing = this.getManifestSync(manifest.digest);
        if (existing) return sameManifest(existing, manifest) ? 'unchanged' : 'conflict';
        this.db
          .prepare('INSERT INTO manifests (digest, size, piece_size, pieces) VALUES (?, ?, ?, ?)')
          .run(manifest.digest, manifest.size, manifest.pieceSize, JSON.stringify(manifest.pieces));
        return 'created';
      })(),
    );
  }

  getManifest(digest: string): Promise<Manifest | undefined> {
    return this.run(() => this.getManifestSync(digest));
  }

  private getManifestSync(digest: string): Manifest | undefined {
    const row = this.db.prepare('SELECT * FROM manifests WHERE digest = ?').get(digest) as
      { digest: string; size: number; piece_size: number; pieces: string } | undefined;
    return (
      row && {
        digest: row.digest,
        size: row.size,
        pieceSize: row.piece_size,
        pieces: JSON.parse(row.pieces) as string[],
      }
    );
  }

  putReplica(replica: Replica): Promise<void> {
    return this.run(() => {
      this.db
        .prepare(
          `INSERT INTO replicas (digest, node_id, complete, pieces, updated_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT(digest, node_id) DO UPDATE SET complete = excluded.complete, pieces = excluded.pieces,
             updated_at = excluded.updated_at`,
        )
        .run(
          replica.digest,
          replica.nodeId,
          replica.complete ? 1 : 0,
          replica.pieces ? JSON.stringify(replica.pieces) : null,
          replica.updatedAt,
        );
    });
  }

  removeReplica(digest: string, nodeId: string): Promise<boolean> {
    return this.run(
      () => this.db.prepare('DELETE FROM replicas WHERE digest = ? AND node_id = ?').run(digest, nodeId).changes > 0,
    );
  }

  candidates(digest: string, now: number, quarantine?: Quarantine): Promise<Candidate[]> {
    return this.run(() => {
      const rows = (
        quarantine
          ? this.statements.candidatesTrusted.all(digest, now, now - quarantine.windowMs, quarantine.threshold)
          : this.statements.candidates.all(digest, now)
      ) as CandidateTuple[];
      return rows.map(([id, url, zone, freeSlots, expiresAt, complete, pieces, updatedAt]) => ({
        node: { id, url, zone: zone ?? undefined, freeUploadSlots: freeSlots, expiresAt },
        replica: {
          digest,
          nodeId: id,
          complete: complete === 1,
          pieces: pieces ? (JSON.parse(pieces) as number[]) : undefined,
          updatedAt,
        },
      }));
    });
  }

  putSource(key: string, digest: string): Promise<void> {
    return this.run(() => {
      this.db
        .prepare(
          `INSERT INTO sources (key, digest, updated_at) VALUES (?, ?, ?)
           ON CONFLICT(key) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at`,
        )
        .run(key, digest, Date.now());
    });
  }

  getSource(key: string): Promise<string | undefined> {
    return this.run(
      () =>
        (this.db.prepare('SELECT digest FROM sources WHERE key = ?').get(key) as { digest: string } | undefined)
          ?.digest,
    );
  }

  report(digest: string, nodeId: string, reporter: string, now: number, windowMs: number): Promise<number> {
    return this.run(() => {
      this.db
        .prepare(
          `INSERT INTO reports (digest, node_id, reporter, at) VALUES (?, ?, ?, ?)
           ON CONFLICT(digest, node_id, reporter) DO UPDATE SET at = excluded.at`,
        )
        .run(digest, nodeId, reporter, now);
      const row = this.db
        .prepare('SELECT count(*) AS n FROM reports WHERE digest = ? AND node_id = ? AND at > ?')
        .get(digest, nodeId, now - windowMs) as { n: number };
      return row.n;
    });
  }

  counts(now: number): Promise<StoreCounts> {
    return this.run(() => {
      const one = (sql: string, ...args: unknown[]): number => (this.db.prepare(sql).get(...args) as { n: number }).n;
      return {
        liveNodes: one('SELECT count(*) AS n FROM nodes WHERE expires_at > ?', now),
        blobs: one('SELECT count(*) AS n FROM manifests'),
        replicas: one(
          'SELECT count(*) AS n FROM replicas r JOIN nodes n ON n.id = r.node_id WHERE n.expires_at > ?',
          now,
        ),
      };
    });
  }

  /** Deletes nodes (and their replicas) whose TTL lapsed; reads never depend on it. */
  private sweep(now: number): void {
    this.db.prepare('DELETE FROM replicas WHERE node_id IN (SELECT id FROM nodes WHERE expires_at <= ?)').run(now);
    this.db.prepare('DELETE FROM nodes WHERE expires_at <= ?').run(now);
  }

  ping(): Promise<void> {
    return this.run(() => {
      this.db.prepare('SELECT 1').get();
    });
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }
}

export function sameManifest(a: Manifest, b: Manifest): boolean {
  return (
    a.digest === b.digest &&
    a.size === b.size &&
    a.pieceSize === b.pieceSize &&
    a.pieces.length === b.pieces.length &&
    a.pieces.every((p, i) => p === b.pieces[i])
  );
}
