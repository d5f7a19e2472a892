// The resume journal beside a part file: which byte ranges are on disk (and durable: the
// part file is flushed before a journal describing it is written) and which pieces were
// verified against a manifest, of which blob. The blob is named by its sha256 when one is
// known, so another URL or another source of the same bytes resumes; else by URL and
// validator. Written atomically (temp file + rename) so a kill -9 at any moment leaves
// either the previous or the next journal, never half of one.
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isRecord } from '../core/validate.js';
import type { Validator } from '../sources/source.js';
import type { ByteRange } from './range-set.js';

const JOURNAL_VERSION = 2;

export interface JournalState {
  version: typeof JOURNAL_VERSION;
  /** `sha256:<hex>` when the engine checks the digest, `pin:<hex>` when the caller does, else `url:<url>`. */
  identity: string;
  size: number;
  validator: Validator;
  ranges: Array<[number, number]>;
  /** Pieces checked against a trusted manifest (indexes), with the piece size they index. */
  pieceSize: number;
  verified: number[];
}

export type JournalSnapshot = Omit<JournalState, 'version' | 'ranges'> & { ranges: readonly ByteRange[] };

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isOptionalString = (v: unknown): boolean => v === undefined || typeof v === 'string';

function isJournal(value: unknown): value is JournalState {
  if (!isRecord(value) || value.version !== JOURNAL_VERSION || typeof value.identity !== 'string') return false;
  if (!isCount(value.size) || !isRecord(value.validator) || !isCount(value.pieceSize)) return false;
  if (!isOptionalString(value.validator.etag) || !isOptionalString(value.validator.lastModified)) return false;
  const size = value.size;
  return (
    Array.isArray(value.verified) &&
    value.verified.every(isCount) &&
    Array.isArray(value.ranges) &&
    value.ranges.every(
      (r: unknown) =>
        Array.isArray(r) && r.length === 2 && isCount(r[0]) && isCount(r[1]) && r[0] < r[1] && r[1] <= size,
    )
  );
}

/**
 * The identity a journal is keyed by: the digest when the engine checks the bytes against it;
 * else a digest the caller checks afterwards (a node cache's --sha256 pin), which names the
 * blob across re-signed URLs but, unchecked here, still needs the validator to match; else
 * the URL.
 */
export function journalIdentity(sha256: string | undefined, url: string, callerSha256?: string): string {
  if (sha256) return `sha256:${sha256}`;
  return callerSha256 ? `pin:${callerSha256}` : `url:${url}`;
}

export function journalPathFor(partPath: string): string {
  return `${partPath}.journal`;
}

/**
 * True when a journal of identity `journal` may describe the bytes of a download of identity
 * `current`: the same one; or, in the node cache (the only place pins key journals, its part
 * named by the source), a pin and a pin or the URL, either way: neither is checked by the
 * engine, so journalMatches needs the validator to match, and a process pinned to a digest
 * resumes the partial of an unpinned one (or one pinned otherwise) that died, and back.
 */
function sameBlob(journal: string, current: string): boolean {
  if (journal === current) return true;
  const unchecked = (identity: string) => identity.startsWith('pin:') || identity.startsWith('url:');
  return (journal.startsWith('pin:') || current.startsWith('pin:')) && unchecked(journal) && unchecked(current);
}

/**
 * Reads the journal of the blob named `identity` (sameBlob). A missing or unreadable one is
 * absent; so is one left by another blob at the same path, which is deleted (it says nothing
 * about this one). `url`: a download the engine checks against a digest (`sha256:`) also
 * takes the journal an unpinned run of the same URL left (`url:`), as journalMatches allows
 * it (the same validator): the rerun of a `--no-cache` fetch with `--sha256` added resumes
 * instead of starting over, and the digest check at the end removes bytes that miss it.
 */
export async function readJournal(path: string, identity: string, url?: string): Promise<JournalState | undefined> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
  if (!isJournal(parsed)) {
    await removeJournal(path);
    return undefined;
  }
  if (sameBlob(parsed.identity, identity)) return parsed;
  if (url !== undefined && identity.startsWith('sha256:') && parsed.identity === `url:${url}`) return parsed;
  await removeJournal(path);
  return undefined;
}

export async function writeJournal(path: string, state: JournalSnapshot): Promise<void> {
  const body: JournalState = {
    version: JOURNAL_VERSION,
    ...state,
    ranges: state.ranges.map(([s, e]) => [s, e]),
  };
  const temp = `${path}.tmp`;
  const text = JSON.stringify(body);
  try {
    await writeFile(temp, text);
    await rename(temp, path);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOSPC') throw err;
    // A full disk has no block for a second file; the journal's own block is still there.
    await rm(temp, { force: true });
    await writeFile(path, text);
  }
}

export async function removeJournal(path: string): Promise<void> {
  await rm(path, { force: true });
  await rm(`${path}.tmp`, { force: true });
}

/**
 * True when a journal describes the version found now. A journal keyed by a digest the engine
 * checks needs only the size to agree (the digest is the identity); one keyed by URL or by a
 * digest checked only afterwards needs the validator too (nothing would catch two versions mixed).
 * Without any validator, then and now, a download pinned by its caller (`current` is `pin:`)
 * resumes on the size alone, as it did when the engine checked pins: the caller's check
 * catches a mix, and the node cache keeps nothing of a resumed download that misses its pin.
 */
export function journalMatches(journal: JournalState, size: number, validator: Validator, current?: string): boolean {
  if (journal.size !== size) return false;
  if (journal.identity.startsWith('sha256:')) return true;
  // Without a validator there is no way to know the bytes on disk are of this version.
  if (!hasValidator(validator)) return current?.startsWith('pin:') === true && !hasValidator(journal.validator);
  return journal.validator.etag === validator.etag && journal.validator.lastModified === validator.lastModified;
}

/** True when the origin names the version it serves (ETag or Last-Modified). */
export function hasValidator(validator: Validator): boolean {
  return Boolean(validator.etag || validator.lastModified);
}

/**
 * A journal is also written whenever this share of the file arrived since the last one, so a
 * kill -9 loses at most about that much however fast the bytes come (at 1 GB/s the 500 ms
 * interval alone would be 500 MB).
 */
const JOURNAL_EVERY_FRACTION = 1 / 32;
const JOURNAL_MIN_BYTES = 1024 * 1024;

/** What a journal would say now, and how to make the bytes it names durable first. */
export interface JournalSource {
  state: JournalSnapshot;
  flush(): Promise<void>;
}

/**
 * Keeps one download's journal: written on a timer, whenever 1/32 of the file arrived, and
 * on exit; one write at a time; each after the part file is flushed (the snapshot is taken
 * before the flush), so the journal never claims a byte that a power cut could still lose.
 */
export class JournalKeeper {
  private chain: Promise<void> = Promise.resolve();
  private pending = false;
  private sinceLast = 0;
  private lastAt = 0;
  private discarded = false;

  constructor(
    readonly path: string,
    private readonly intervalMs: number,
    /** The journal to write now; undefined when there is nothing worth saving. */
    private readonly current: () => JournalSource | undefined,
  ) {}

  /** `bytes` more are on disk of a file of `size`. */
  received(bytes: number, size: number): void {
    this.sinceLast += bytes;
    if (this.sinceLast >= Math.max(JOURNAL_MIN_BYTES, size * JOURNAL_EVERY_FRACTION) && !this.pending) this.save();
  }

  /** Called on the download's ticker: saves when the interval has passed. */
  tick(): void {
    if (Date.now() - this.lastAt >= this.intervalMs) this.save();
  }

  save(): void {
    if (this.discarded) return;
    const current = this.current();
    if (!current) return;
    this.lastAt = Date.now();
    this.sinceLast = 0;
    this.pending = true;
    this.chain = this.chain
      .then(async () => {
        await current.flush();
        if (!this.discarded) await writeJournal(this.path, current.state);
      })
      .catch(() => undefined)
      .finally(() => {
        this.pending = false;
      });
  }

  /** Resolves when no write is in flight. */
  settled(): Promise<void> {
    return this.chain;
  }

  /** Deletes the journal for good (the bytes it described are gone): no later write recreates it. */
  async discard(): Promise<void> {
    this.discarded = true;
    await this.chain;
    await removeJournal(this.path);
  }
}
