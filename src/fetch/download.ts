// Downloads one blob into a part file from a set of sources: learns the size (from what is
// expected, else one probe), plans ranges in file order, runs each source's workers, checks
// every piece (against a trusted manifest, else the whole-file sha256 over the finished
// prefix), and keeps a resume journal. It never renames anything; the caller decides where
// a finished, verified file goes (the output path, or the cache's blob store).
//
// This file is the engine's entry (and starts over once when the file changes); the parts
// live beside it: the pass that coordinates them (blob-download.ts), the public shapes
// (download-types.ts), the first request (probe.ts), the sources, their health and pace
// (source-set.ts), their workers (source-worker.ts) writing each response (range-pump.ts,
// into slabs: slab-writer.ts, slab-sink.ts), the retry budget (retry-budget.ts), piece checks
// and their verdicts (piece-checks.ts, over piece-verifier.ts, prefix-hasher.ts,
// hash-thread.ts), a server without ranges (whole-stream.ts), the plan (scheduler.ts),
// progress and retry waits (download-progress.ts) and the journal (journal.ts).
import { rm } from 'node:fs/promises';
import { SourceChangedError } from '../core/errors.js';
import { BlobDownload } from './blob-download.js';
import type {
  BlobDownloadHandle,
  BlobDownloadParams,
  BlobDownloadResult,
  DownloadOptions,
  DownloadTrail,
} from './download-types.js';
import { journalPathFor, removeJournal } from './journal.js';
import type { SourceSlot } from './source-set.js';
import { emptyStats } from './stats.js';

export type { SourceSlot, DroppedSource } from './source-set.js';
export type {
  BlobDownloadHandle,
  BlobDownloadParams,
  BlobDownloadResult,
  DownloadOptions,
  DownloadResult,
  DownloadTrail,
  FetchProgress,
  RetryWait,
} from './download-types.js';

/** Starts downloading one blob from `params.sources`; see BlobDownloadHandle. */
export function startBlobDownload(params: BlobDownloadParams): BlobDownloadHandle {
  let download: BlobDownload;
  try {
    download = new BlobDownload(params, params.trail?.stats ?? emptyStats());
  } catch (err) {
    // Bad parameters reject like any other failure of the download.
    return { result: Promise.reject(err as Error), addSource: () => undefined };
  }
  return { result: download.run(), addSource: (slot) => download.addSource(slot) };
}

/** Downloads one blob from many sources into `params.partPath`. */
export function downloadBlob(params: BlobDownloadParams): Promise<BlobDownloadResult> {
  return startBlobDownload(params).result;
}

/** One origin, one part file: the CLI's and the cache's download. Starts over once on a change. */
export async function downloadToPart(
  source: SourceSlot['source'],
  partPath: string,
  options: DownloadOptions & { produceManifest?: boolean; trail?: DownloadTrail },
): Promise<BlobDownloadResult> {
  const stats = options.trail?.stats ?? emptyStats();
  const params: BlobDownloadParams = {
    ...options,
    sources: [{ id: 'origin', kind: 'origin', source, maxConcurrency: options.workers, preference: 1 }],
    partPath,
    expected: options.expectedSha256 ? { sha256: options.expectedSha256 } : undefined,
    produceManifest: options.produceManifest ?? false,
  };
  for (;;) {
    try {
      return await new BlobDownload(params, stats).run();
    } catch (err) {
      if (err instanceof SourceChangedError && options.restartOnChange && stats.restarts === 0) {
        stats.restarts++;
        await removeJournal(journalPathFor(partPath));
        await rm(partPath, { force: true });
        continue;
      }
      throw err;
    }
  }
}

/** Removes a part file and its journal: bytes the caller will not keep (refused after the download). */
export async function discardPart(partPath: string): Promise<void> {
  await rm(partPath, { force: true });
  await removeJournal(journalPathFor(partPath));
}
