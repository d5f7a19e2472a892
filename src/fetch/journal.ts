// The resume journal beside `<out>.part`: which byte ranges are on disk, of which version
// (size and validator). Written atomically (temp file + rename) so a kill -9 at any moment
// leaves either the previous or the next journal, never half of one.
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { z } from 'zod';
import type { Validator } from '../sources/source.js';
import type { ByteRange } from './range-set.js';

const JOURNAL_VERSION = 1;

const journalSchema = z.object({
  version: z.literal(JOURNAL_VERSION),
  url: z.string(),
  size: z.number().int().nonnegative(),
  validator: z.object({ etag: z.string().optional(), lastModified: z.string().optional() }),
  ranges: z.array(z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()])),
});

export type JournalState = z.infer<typeof journalSchema>;

export function journalPathFor(partPath: string): string {
  return `${partPath}.journal`;
}

/** Reads a journal; a missing, unreadable or foreign one is treated as absent. */
export async function readJournal(path: string): Promise<JournalState | undefined> {
  try {
    const parsed = journalSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export async function writeJournal(
  path: string,
  state: { url: string; size: number; validator: Validator; ranges: readonly ByteRange[] },
): Promise<void> {
  const body: JournalState = { version: JOURNAL_VERSION, ...state, ranges: state.ranges.map(([s, e]) => [s, e]) };
  const temp = `${path}.tmp`;
  await writeFile(temp, JSON.stringify(body));
  await rename(temp, path);
}

export async function removeJournal(path: string): Promise<void> {
  await rm(path, { force: true });
  await rm(`${path}.tmp`, { force: true });
}

/** True when a journal describes the same version of the same file. */
export function journalMatches(journal: JournalState, url: string, size: number, validator: Validator): boolean {
  if (journal.url !== url || journal.size !== size) return false;
  // Without a validator there is no way to know the bytes on disk are of this version.
  if (!validator.etag && !validator.lastModified) return false;
  return journal.validator.etag === validator.etag && journal.validator.lastModified === validator.lastModified;
}
