// Moving a partial download to another part file, across file systems: the bytes its ranges
// name are copied (holes stay holes), the copy is flushed, and only then is its journal
// written, so the new part resumes where the old one stopped. The node cache uses it when
// its own disk fills up mid-download: the bytes already fetched go on to --out's part
// instead of being fetched again (src/cache/cached-fetch.ts).
import { rm } from 'node:fs/promises';
import { DiskAccessError, diskError } from '../core/errors.js';
import { journalPathFor, removeJournal, writeJournal, type JournalSnapshot } from './journal.js';
import { PartFile } from './part-file.js';

/** Bytes read and written at a time. */
const COPY_BLOCK = 1024 * 1024;

/**
 * Copies the ranges of `partial` from the part `from` to the part `to` (replacing what `to`
 * held), writes `to`'s journal under `identity` (the identity the download that resumes it
 * computes), then removes `from` and its journal. Returns the bytes moved. On a failure `to`
 * and its journal are removed and `from` is left as it was.
 */
export async function movePartial(
  from: string,
  to: string,
  partial: JournalSnapshot,
  identity: string,
): Promise<number> {
  const source = await PartFile.open(from);
  let target: PartFile | undefined;
  let moved = 0;
  try {
    await rm(to, { force: true });
    await removeJournal(journalPathFor(to));
    target = await PartFile.open(to);
    // Sparse: only the ranges below take blocks (the download preallocates the rest itself).
    await target.truncate(partial.size);
    const buffer = Buffer.allocUnsafe(COPY_BLOCK);
    for (const [start, end] of partial.ranges) {
      for (let at = start; at < end; at += COPY_BLOCK) {
        const length = Math.min(COPY_BLOCK, end - at);
        const read = await source.read(buffer, length, at).catch((err: unknown) => {
          throw diskError(err, `reading ${from}`, from);
        });
        if (read !== length)
          throw new DiskAccessError(`${from} ends at byte ${at + read}, before the ${end} its download wrote`, {
            path: from,
          });
        await target.write(buffer, length, at);
      }
      moved += end - start;
    }
    // The journal never names a byte a power cut could still take from the new part.
    await target.sync();
    await writeJournal(journalPathFor(to), { ...partial, identity });
  } catch (err) {
    await target?.close();
    await rm(to, { force: true });
    await removeJournal(journalPathFor(to));
    throw diskError(err, `moving ${from} to ${to}`, to);
  } finally {
    await source.close();
  }
  await target.close();
  await rm(from, { force: true });
  await removeJournal(journalPathFor(from));
  return moved;
}
