// The node cache as a fetch sees it: `lookup` (a usable copy of a source or of a digest),
// `claim` (the right to download a source, with the part file to write), `admit` (a finished
// download into the store and the index) and `place` (a copy at an output path). It hides
// the index, the hit hints and the blob store: each lookup's copy says where it was found,
// and placing it records the use there. A hint answers without SQLite; the index is opened
// (and SQLite loaded) only when it cannot.
import type { Validator } from '../sources/source.js';
import { checkedBlob, recordLinkInHint, recordLinkInIndex } from './blob-check.js';
import { currentStamp, sameStamp } from './blob-identity.js';
import { adoptBlob, ensureLayout, materialize, withBlobInUse, type Materialization } from './blob-store.js';
import type { CacheIndex, SourceEntry } from './cache-index.js';
import { cacheLayout, partPath, type CacheLayout } from './cache-root.js';
import { readHint, recordHintUse, type HitHint } from './hit-hints.js';
import type { HeldLock, WaitOptions } from './single-flight.js';
import { credentialsAllow } from './source-key.js';

interface CopyFields {
  digest: string;
  size: number;
  validator: Validator;
}

/** A blob this cache can place, and where it was found (what its placement records). */
export type CachedCopy =
  HintCopy | IndexCopy | (CopyFields & { via: 'blob'; key: string }) | (CopyFields & { via: 'admitted' });
export type HintCopy = HitHint & { via: 'hint' };
export type IndexCopy = SourceEntry & { via: 'index' };

/** What `lookup` found for a source: the copy if usable, and the row it judged (for `recordedSince`). */
export interface SourceLookup {
  copy: IndexCopy | undefined;
  seen: Pick<SourceEntry, 'digest' | 'fetchedAt'> | undefined;
}

/** The right to download a source (single-flight.ts), and where its bytes go. */
export interface Claim extends HeldLock {
  part: string;
}

/** The cache before its index is opened: what a hit served from its hint needs. */
export class NodeCache {
  readonly layout: CacheLayout;

  constructor(
    root: string,
    /** Human messages: a blob changed on disk, an index write refused. */
    protected readonly status: (message: string) => void = () => undefined,
  ) {
    this.layout = cacheLayout(root);
  }

  get root(): string {
    return this.layout.root;
  }

  /**
   * Without SQLite: the copy the hint of `key` names, when its blob is on disk exactly as the
   * hint recorded it (inode, size, mtime, ctime) and is the digest asked for, if one was.
   * Anything else is for `lookup`, which rehashes a blob that looks changed.
   */
  lookupHint(key: string, expected: string | undefined): HintCopy | undefined {
    const hint = readHint(this.layout, key);
    if (!hint || (expected !== undefined && hint.digest !== expected)) return undefined;
    const now = currentStamp(this.layout, hint.digest);
    return now?.size === hint.size && sameStamp(now, hint.stamp) ? { ...hint, via: 'hint' } : undefined;
  }

  /** Puts a hint's copy at `out` (see OpenNodeCache.place) and records the use in the hint. */
  async place(copy: HintCopy, out: string): Promise<Materialization> {
    const { layout } = this;
    const placed = await withBlobInUse(layout, copy.digest, () =>
      materialize(layout, copy.digest, out, recordLinkInHint(layout, copy)),
    );
    recordHintUse(layout, copy.key);
    return placed;
  }

  /**
   * Creates the layout and opens the index; a CacheError when the cache cannot be used. An
   * index write refused later (a full disk) is reported, and does not cost the caller the
   * download it records.
   */
  async open(): Promise<OpenNodeCache> {
    await ensureLayout(this.layout);
    const { CacheIndex } = await import('./cache-index.js');
    const index = new CacheIndex(this.layout, {
      onWriteFailure: (err) => this.status(`${err.message}; the file is delivered anyway`),
    });
    return new OpenNodeCache(this.root, this.status, index);
  }
}

/** The cache with its index open. */
export class OpenNodeCache extends NodeCache {
  constructor(
    root: string,
    status: (message: string) => void,
    private readonly index: CacheIndex,
  ) {
    super(root, status);
  }

  close(): void {
    this.index.close();
  }

  /** The index's entry for `key` when its blob is on disk and intact (blob-check.ts). */
  async lookup(key: string): Promise<SourceLookup> {
    const seen = this.index.source(key);
    return { copy: seen && (await this.usable(seen, this.status)), seen };
  }

  /**
   * The usable entry for `key` if one was recorded since `earlier` looked: another process's
   * download. Compared by identity, not by clock: a process may spend any time between its
   * look and taking the lock.
   */
  async recordedSince(key: string, earlier: SourceLookup): Promise<IndexCopy | undefined> {
    const row = this.index.source(key);
    if (!row) return undefined;
    const { seen } = earlier;
    if (seen !== undefined && row.fetchedAt === seen.fetchedAt && row.digest === seen.digest) return undefined;
    return this.usable(row);
  }

  /** The blob `digest`, if it is here, intact, and not kept apart by credentials `key` lacks. */
  async lookupBlob(digest: string, key: string): Promise<CachedCopy | undefined> {
    const blob = this.index.blob(digest);
    if (!blob || !credentialsAllow(blob.sources, key)) return undefined;
    if (!(await checkedBlob(this.index, this.layout, digest, blob.size, blob.stamp, this.status))) return undefined;
    return { digest, size: blob.size, validator: {}, via: 'blob', key };
  }

  /**
   * Takes the source's lock (or 'done' when another process finished it meanwhile), with the
   * path of the part file its holder downloads into: named by the source, so a process that
   * takes the lock after its holder died resumes the holder's bytes.
   */
  async claim(key: string, options: WaitOptions): Promise<Claim | 'done'> {
    const { acquireSourceLock, keyHash } = await import('./single-flight.js');
    const lock = await acquireSourceLock(this.layout, key, options);
    return lock === 'done' ? 'done' : Object.assign(lock, { part: partPath(this.layout, keyHash(key)) });
  }

  /**
   * Records a finished, verified download of `key`; with `part`, first moves that file into
   * the store (a planned download has stored its blob itself).
   */
  async admit(
    key: string,
    download: { sha256: string; size: number; validator: Validator },
    part?: string,
  ): Promise<CachedCopy> {
    if (part !== undefined) await adoptBlob(this.layout, part, download.sha256);
    this.index.recordFetch(key, download.sha256, download.size, download.validator);
    return { digest: download.sha256, size: download.size, validator: download.validator, via: 'admitted' };
  }

  /** Puts `copy` at `out` (hard link, else clone, else copy) and records the use where it was found. */
  override async place(copy: CachedCopy, out: string): Promise<Materialization> {
    if (copy.via === 'hint') return super.place(copy, out);
    const { layout, index } = this;
    const placed = await withBlobInUse(layout, copy.digest, () =>
      materialize(layout, copy.digest, out, recordLinkInIndex(index, copy.digest)),
    );
    if (copy.via === 'admitted') return placed;
    index.touch(copy.digest, copy.key);
    // The row as it is now: the link above may have restamped it.
    const row = copy.via === 'index' ? index.source(copy.key) : undefined;
    if (row) index.restoreHint(row);
    return placed;
  }

  private async usable(entry: SourceEntry, status?: (message: string) => void): Promise<IndexCopy | undefined> {
    const stamp = await checkedBlob(this.index, this.layout, entry.digest, entry.size, entry.stamp, status);
    return stamp ? { ...entry, stamp, via: 'index' } : undefined;
  }
}
