// The resume journal beside `<out>.part`: which byte ranges are on disk, of which version
// (size and validator). Written atomically (temp file + rename) so a kill -9 at any moment
// leaves either the previous or the next journal, never half of one.
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isRecord } from '../core/validate.js';
import type { Validator } from '../sources/source.js';
import type { ByteRange } from './range-set.js';

const JOURNAL_VERSION = 1;

export interface JournalState {
  version: typeof JOURNAL_VERSION;
  url: string;
  size: number;
  validator: Validator;
  ranges: Array<[number, number]>;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isOptionalString = (v: unknown): boolean => v === undefined || typeof v === 'string';

function isJournal(value: unknown): value is JournalState {
  if (!isRecord(value) || value.version !== JOURNAL_VERSION || typeof value.url !== 'string') return false;
  if (!isCount(value.size) || !isRecord(value.validator)) return false;
  if (!isOptionalString(value.validator.etag) || !isOptionalString(value.validator.lastModified)) return false;
  const size = value.size;
  return (
    Array.isArray(value.ranges) &&
    value.ranges.every(
      (r: unknown) =>
        Array.isArray(r) && r.length === 2 && isCount(r[0]) && isCount(r[1]) && r[0] < r[1] && r[1] <= size,
    )
  );
}

export function journalPathFor(partPath: string): string {
  return `${partPath}.journal`;
}

/**
 * Reads the journal of `url`. A missing or unreadable one is absent; so is one left by
 * another URL at the same path, which is deleted (it says nothing about this file).
 */
export async function readJournal(path: string, url: string): Promise<JournalState | undefined> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
  if (isJournal(parsed) && parsed.url === url) return parsed;
  await removeJournal(path);
  return undefined;
}

export async function writeJournal(
  path: string,
  state: { url: string; size: number; validator: Validator; ranges: readonly ByteRange[] },
): Promise<void> {
  const body: JournalState = { version: JOURNAL_VERSION, ...state, ranges: state.ranges.map(([s, e]) => [s, e]) };
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

/** True when a journal (of this URL) describes the version the probe found. */
export function journalMatches(journal: JournalState, size: number, validator: Validator): boolean {
  if (journal.size !== size) return false;
  // Without a validator there is no way to know the bytes on disk are of this version.
  if (!validator.etag && !validator.lastModified) return false;
  return journal.validator.etag === validator.etag && journal.validator.lastModified === validator.lastModified;
}
