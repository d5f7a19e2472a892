// The cache's index in SQLite (better-sqlite3, WAL, so several loom processes on a node
// read while one writes): which source key maps to which blob, with the validator seen
// when it was fetched, and when each blob was last used (for LRU eviction). Each source
// row is mirrored by a hit hint (hit-hints.ts), written and removed here with the row, so
// the two cannot drift apart through a caller that forgot one of them.
import Database from 'better-sqlite3';
import { CacheError } from '../core/errors.js';
import type { Validator } from '../sources/source.js';
import type { CacheLayout } from './cache-root.js';
import { listHintUses, removeHints, writeHint } from './hit-hints.js';

export interface SourceEntry {
  key: string;
  digest: string;
  size: number;
  validator: Validator;
  fetchedAt: number;
  lastUsedAt: number;
}

export interface BlobEntry {
  digest: string;
  size: number;
  createdAt: number;
  lastUsedAt: number;
  /** Source keys that map to this blob. */
  sources: string[];
}

interface SourceRow {
  key: string;
  digest: string;
  size: number;
  etag: string | null;
  last_modified: string | null;
  fetched_at: number;
  last_used_at: number;
}

interface BlobRow {
  digest: string;
  size: number;
  created_at: number;
  last_used_at: number;
  sources: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS blobs (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
  key TEXT PRIMARY KEY,
  digest TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
  size INTEGER NOT NULL,
  etag TEXT,
  last_modified TEXT,
  fetched_at INTEGER NOT NULL,
  last_used_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sources_digest ON sources(digest);
`;

export class CacheIndex {
  private readonly db: Database.Database;

  constructor(private readonly layout: CacheLayout) {
    const path = layout.index;
    try {
      this.db = new Database(path, { timeout: 10_000 });
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('foreign_keys = ON');
      this.db.exec(SCHEMA);
    } catch (err) {
      throw new CacheError(`cannot open the cache index ${path}: ${(err as Error).message}`, {
        path,
        cause: err,
        hint: 'check that the cache directory is writable (--cache-dir, LOOM_CACHE_DIR)',
      });
    }
  }

  source(key: string): SourceEntry | undefined {
    const row = this.db.prepare('SELECT * FROM sources WHERE key = ?').get(key) as SourceRow | undefined;
    return row && toSource(row);
  }

  blob(digest: string): BlobEntry | undefined {
    const row = this.db
      .prepare(
        `SELECT b.*, (SELECT group_concat(key, char(10)) FROM sources s WHERE s.digest = b.digest) AS sources
         FROM blobs b WHERE digest = ?`,
      )
      .get(digest) as BlobRow | undefined;
    return row && toBlob(row);
  }

  /** Every blob, least recently used first. */
  blobs(): BlobEntry[] {
    const rows = this.db
      .prepare(
        `SELECT b.*, (SELECT group_concat(key, char(10)) FROM sources s WHERE s.digest = b.digest) AS sources
         FROM blobs b ORDER BY last_used_at ASC, digest ASC`,
      )
      .all() as BlobRow[];
    return rows.map(toBlob);
  }

  /** Records a finished blob and the source it came from. */
  recordFetch(key: string, digest: string, size: number, validator: Validator, now = Date.now()): void {
    this.db.transaction(() => {
      this.recordBlob(digest, size, now);
      this.db
        .prepare(
          `INSERT INTO sources (key, digest, size, etag, last_modified, fetched_at, last_used_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(key) DO UPDATE SET digest = excluded.digest, size = excluded.size, etag = excluded.etag,
             last_modified = excluded.last_modified, fetched_at = excluded.fetched_at, last_used_at = excluded.last_used_at`,
        )
        .run(key, digest, size, validator.etag ?? null, validator.lastModified ?? null, now, now);
    })();
    writeHint(this.layout, { key, digest, size, validator, fetchedAt: now });
  }

  /** Writes the hint of a row again (a cache from before hints, or a crash between the two). */
  restoreHint(entry: SourceEntry): void {
    writeHint(this.layout, {
      key: entry.key,
      digest: entry.digest,
      size: entry.size,
      validator: entry.validator,
      fetchedAt: entry.fetchedAt,
    });
  }

  private recordBlob(digest: string, size: number, now: number): void {
    this.db
      .prepare(
        `INSERT INTO blobs (digest, size, created_at, last_used_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(digest) DO UPDATE SET last_used_at = excluded.last_used_at`,
      )
      .run(digest, size, now, now);
  }

  /** Records a use at `at`; an older time than the one recorded changes nothing. */
  touch(digest: string, key: string | undefined, at = Date.now()): void {
    this.db.prepare('UPDATE blobs SET last_used_at = MAX(last_used_at, ?) WHERE digest = ?').run(at, digest);
    if (key) this.db.prepare('UPDATE sources SET last_used_at = MAX(last_used_at, ?) WHERE key = ?').run(at, key);
  }

  /** Takes in the uses that hits served from hints recorded in the hints' mtimes. */
  foldHintUses(): void {
    const uses = listHintUses(this.layout);
    this.db.transaction(() => {
      for (const use of uses) this.touch(use.digest, use.key, use.usedAt);
    })();
  }

  removeSource(key: string): boolean {
    const removed = this.db.prepare('DELETE FROM sources WHERE key = ?').run(key).changes > 0;
    removeHints(this.layout, [key]);
    return removed;
  }

  /** Forgets a blob and every source that mapped to it. */
  removeBlob(digest: string): void {
    const keys = this.blob(digest)?.sources ?? [];
    this.db.prepare('DELETE FROM blobs WHERE digest = ?').run(digest);
    removeHints(this.layout, keys);
  }

  close(): void {
    this.db.close();
  }
}

function toSource(row: SourceRow): SourceEntry {
  const validator: Validator = {};
  if (row.etag !== null) validator.etag = row.etag;
  if (row.last_modified !== null) validator.lastModified = row.last_modified;
  return {
    key: row.key,
    digest: row.digest,
    size: row.size,
    validator,
    fetchedAt: row.fetched_at,
    lastUsedAt: row.last_used_at,
  };
}

function toBlob(row: BlobRow): BlobEntry {
  return {
    digest: row.digest,
    size: row.size,
    createdAt: row.created_at,
    lastUsedAt: row.last_used_at,
    sources: row.sources ? row.sources.split('\n') : [],
  };
}
