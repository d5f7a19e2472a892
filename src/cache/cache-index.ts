// The cache's index in SQLite (better-sqlite3, WAL, so several loom processes on a node
// read while one writes): which source key maps to which blob, with the validator seen
// when it was fetched, and when each blob was last used (for LRU eviction). Each source
// row is mirrored by a hit hint (hit-hints.ts), written and removed here with the row, so
// the two cannot drift apart through a caller that forgot one of them. Each blob row also
// keeps the blob file's stamp (blob-identity.ts). A write SQLite refuses (a full disk above
// all) is a CacheError that says so, never a raw SQLite error.
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { CacheError } from '../core/errors.js';
import type { Validator } from '../sources/source.js';
import { stampOf, type BlobStamp } from './blob-identity.js';
import { blobPath, type CacheLayout } from './cache-root.js';
import { listHintUses, removeHints, writeHint } from './hit-hints.js';

export interface SourceEntry {
  key: string;
  digest: string;
  size: number;
  validator: Validator;
  fetchedAt: number;
  lastUsedAt: number;
  /** The blob file as recorded at adoption or at the last check that found it intact. */
  stamp: BlobStamp | undefined;
}

export interface BlobEntry {
  digest: string;
  size: number;
  createdAt: number;
  lastUsedAt: number;
  /** Source keys that map to this blob. */
  sources: string[];
  stamp: BlobStamp | undefined;
}

export interface CacheIndexOptions {
  /**
   * Given, a write of a fetch's record or of a use that fails (the disk is full) is reported
   * here and the caller goes on without it: the verified blob is still placed at the output.
   * Absent, the CacheError is thrown.
   */
  onWriteFailure?: (err: CacheError) => void;
}

interface StampColumns {
  ino: number | null;
  mtime_ms: number | null;
  ctime_ms: number | null;
  nlink: number | null;
}

interface SourceRow extends StampColumns {
  key: string;
  digest: string;
  size: number;
  etag: string | null;
  last_modified: string | null;
  fetched_at: number;
  last_used_at: number;
}

interface BlobRow extends StampColumns {
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

/** Columns added since the first schema, with their types. */
const ADDED_BLOB_COLUMNS: Array<[string, string]> = [
  ['ino', 'INTEGER'],
  ['mtime_ms', 'REAL'],
  ['ctime_ms', 'REAL'],
  ['nlink', 'INTEGER'],
];

function isSqliteError(err: unknown): err is Error & { code: string } {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && err.name === 'SqliteError';
}

const OPEN_TIMEOUT_MS = 10_000;

/**
 * Opens the index, waiting out another process that is opening it too. SQLite's busy
 * timeout covers reads and writes but not the switch to WAL: two processes opening a new
 * cache at once (a fleet's first fetches) can get SQLITE_BUSY at once from that pragma
 * (seen here about once in 30 such starts), so the open is retried until the same timeout.
 */
function openIndex(path: string): Database.Database {
  const deadline = Date.now() + OPEN_TIMEOUT_MS;
  for (let attempt = 0; ; attempt++) {
    // Each try waits only for what is left of the one timeout, so that the open as a whole
    // gives up after it, not after one more timeout per try.
    const db = new Database(path, { timeout: Math.max(1, deadline - Date.now()) });
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.exec(SCHEMA);
      db.pragma(`busy_timeout = ${OPEN_TIMEOUT_MS}`);
      return db;
    } catch (err) {
      db.close();
      if (!(isSqliteError(err) && err.code.startsWith('SQLITE_BUSY')) || Date.now() >= deadline) throw err;
      // A constructor cannot await: a short blocking sleep, as SQLite's own busy handler does.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.min(5 * 2 ** attempt, 100));
    }
  }
}

/**
 * What to do about an index that does not open, by SQLite's reason. "Check that it is
 * writable" for all of them sent users after permissions when another process held the
 * index, or when the file was damaged (which no later fetch mends: each bypasses the cache).
 */
function openHint(err: unknown, path: string): string {
  const code = isSqliteError(err) ? err.code : '';
  if (code === 'SQLITE_FULL')
    return 'the disk holding the cache is full: free space or run loom cache gc --max-size SIZE';
  if (code.startsWith('SQLITE_BUSY'))
    return `another process kept the index locked for ${OPEN_TIMEOUT_MS / 1000} s (a loom process stopped mid-write?): fuser ${path} names it`;
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT'))
    return `the index is damaged: remove ${path} (the blobs stay; loom cache gc then removes those no longer indexed)`;
  return 'check that the cache directory is writable (--cache-dir, LOOM_CACHE_DIR)';
}

export class CacheIndex {
  private readonly db: Database.Database;

  constructor(
    private readonly layout: CacheLayout,
    private readonly options: CacheIndexOptions = {},
  ) {
    const path = layout.index;
    try {
      this.db = openIndex(path);
      this.addMissingColumns();
    } catch (err) {
      throw new CacheError(`cannot open the cache index ${path}: ${(err as Error).message}`, {
        path,
        cause: err,
        hint: openHint(err, path),
      });
    }
  }

  private addMissingColumns(): void {
    const present = new Set((this.db.pragma('table_info(blobs)') as Array<{ name: string }>).map((c) => c.name));
    for (const [name, type] of ADDED_BLOB_COLUMNS) {
      if (present.has(name)) continue;
      try {
        this.db.exec(`ALTER TABLE blobs ADD COLUMN ${name} ${type}`);
      } catch (err) {
        // Another process added it meanwhile.
        if (!/duplicate column/i.test((err as Error).message)) throw err;
      }
    }
  }

  /** Runs a write; SQLite's refusal becomes a CacheError that says what could not be written. */
  private write<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (!isSqliteError(err)) throw err;
      const full = err.code === 'SQLITE_FULL';
      throw new CacheError(
        full
          ? `the disk holding the cache is full: could not ${what} in the cache index ${this.layout.index}`
          : `could not ${what} in the cache index ${this.layout.index}: ${err.message}`,
        {
          path: this.layout.index,
          cause: err,
          hint: full ? 'free space, or make room with loom cache gc --max-size SIZE' : undefined,
        },
      );
    }
  }

  /** A write the caller can do without (see CacheIndexOptions.onWriteFailure). */
  private bestEffortWrite(what: string, fn: () => void): boolean {
    try {
      this.write(what, fn);
      return true;
    } catch (err) {
      if (!(err instanceof CacheError) || !this.options.onWriteFailure) throw err;
      this.options.onWriteFailure(err);
      return false;
    }
  }

  source(key: string): SourceEntry | undefined {
    const row = this.db
      .prepare(
        'SELECT s.*, b.ino, b.mtime_ms, b.ctime_ms, b.nlink FROM sources s LEFT JOIN blobs b ON b.digest = s.digest WHERE s.key = ?',
      )
      .get(key) as SourceRow | undefined;
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

  /**
   * Records a finished blob (just adopted into the store: its file is stamped now) and the
   * source it came from.
   */
  recordFetch(key: string, digest: string, size: number, validator: Validator, now = Date.now()): void {
    const blob = statSync(blobPath(this.layout, digest), { throwIfNoEntry: false });
    const stamp = blob?.isFile() ? stampOf(blob) : undefined;
    const recorded = this.bestEffortWrite(`record ${digest}`, () =>
      this.db.transaction(() => {
        this.recordBlob(digest, size, now, stamp);
        this.db
          .prepare(
            `INSERT INTO sources (key, digest, size, etag, last_modified, fetched_at, last_used_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(key) DO UPDATE SET digest = excluded.digest, size = excluded.size, etag = excluded.etag,
               last_modified = excluded.last_modified, fetched_at = excluded.fetched_at, last_used_at = excluded.last_used_at`,
          )
          .run(key, digest, size, validator.etag ?? null, validator.lastModified ?? null, now, now);
      })(),
    );
    if (recorded) writeHint(this.layout, { key, digest, size, validator, fetchedAt: now, ...(stamp && { stamp }) });
  }

  /** Writes the hint of a row again (a cache from before hints, or a crash between the two). */
  restoreHint(entry: SourceEntry): void {
    writeHint(this.layout, {
      key: entry.key,
      digest: entry.digest,
      size: entry.size,
      validator: entry.validator,
      fetchedAt: entry.fetchedAt,
      ...(entry.stamp && { stamp: entry.stamp }),
    });
  }

  /** Records the blob file as now seen intact (after a rehash, or a link of Loom's own), row and hints. */
  restamp(digest: string, stamp: BlobStamp): void {
    const done = this.bestEffortWrite(`record the state of blob ${digest}`, () =>
      this.db
        .prepare('UPDATE blobs SET ino = ?, mtime_ms = ?, ctime_ms = ?, nlink = ? WHERE digest = ?')
        .run(stamp.ino, stamp.mtimeMs, stamp.ctimeMs, stamp.nlink ?? null, digest),
    );
    if (!done) return;
    const rows = this.db.prepare('SELECT * FROM sources WHERE digest = ?').all(digest) as SourceRow[];
    for (const row of rows)
      this.restoreHint({ ...toSource({ ...row, ino: null, mtime_ms: null, ctime_ms: null, nlink: null }), stamp });
  }

  private recordBlob(digest: string, size: number, now: number, stamp: BlobStamp | undefined): void {
    this.db
      .prepare(
        `INSERT INTO blobs (digest, size, created_at, last_used_at, ino, mtime_ms, ctime_ms, nlink) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(digest) DO UPDATE SET last_used_at = excluded.last_used_at, ino = excluded.ino,
           mtime_ms = excluded.mtime_ms, ctime_ms = excluded.ctime_ms, nlink = excluded.nlink`,
      )
      .run(
        digest,
        size,
        now,
        now,
        stamp?.ino ?? null,
        stamp?.mtimeMs ?? null,
        stamp?.ctimeMs ?? null,
        stamp?.nlink ?? null,
      );
  }

  /** Records a use at `at`; an older time than the one recorded changes nothing. */
  touch(digest: string, key: string | undefined, at = Date.now()): void {
    this.bestEffortWrite(`record a use of ${digest}`, () => {
      this.db.prepare('UPDATE blobs SET last_used_at = MAX(last_used_at, ?) WHERE digest = ?').run(at, digest);
      if (key) this.db.prepare('UPDATE sources SET last_used_at = MAX(last_used_at, ?) WHERE key = ?').run(at, key);
    });
  }

  /** Takes in the uses that hits served from hints recorded in the hints' mtimes. */
  foldHintUses(): void {
    const uses = listHintUses(this.layout);
    this.write('record the uses of hits', () =>
      this.db.transaction(() => {
        for (const use of uses) this.touch(use.digest, use.key, use.usedAt);
      })(),
    );
  }

  removeSource(key: string): boolean {
    const removed = this.write(
      `remove ${key}`,
      () => this.db.prepare('DELETE FROM sources WHERE key = ?').run(key).changes > 0,
    );
    removeHints(this.layout, [key]);
    return removed;
  }

  /** Forgets a blob and every source that mapped to it. */
  removeBlob(digest: string): void {
    const keys = this.blob(digest)?.sources ?? [];
    // The hints first: a hint must never outlive its row.
    removeHints(this.layout, keys);
    this.write(`remove ${digest}`, () => this.db.prepare('DELETE FROM blobs WHERE digest = ?').run(digest));
  }

  close(): void {
    this.db.close();
  }
}

function stampOfRow(row: StampColumns & { size: number }): BlobStamp | undefined {
  if (row.ino === null || row.mtime_ms === null || row.ctime_ms === null) return undefined;
  return {
    ino: row.ino,
    size: row.size,
    mtimeMs: row.mtime_ms,
    ctimeMs: row.ctime_ms,
    ...(row.nlink === null ? {} : { nlink: row.nlink }),
  };
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
    stamp: stampOfRow(row),
  };
}

function toBlob(row: BlobRow): BlobEntry {
  return {
    digest: row.digest,
    size: row.size,
    createdAt: row.created_at,
    lastUsedAt: row.last_used_at,
    sources: row.sources ? row.sources.split('\n') : [],
    stamp: stampOfRow(row),
  };
}
