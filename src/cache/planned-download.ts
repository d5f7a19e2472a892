// A cache miss downloaded as a planner says (peers and the origin), into the cache: the
// bytes go to `tmp/<id>.part`, every verified piece is recorded in `tmp/<id>.pieces.json`
// so this node's agent serves it to other nodes at once, and the finished blob is checked
// by the planner before it is adopted under its digest, with its manifest kept beside it.
// The lock of the id (single-flight.ts holdPartialLock) is held throughout, so gc can tell
// a running download's files from a killed one's. When the cache's disk fills up, the
// verified pieces can be handed to the caller (PlanSpill) to go on at --out, the lock held.
import { mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { LoomError } from '../core/errors.js';
import { pieceRange, pieceSizeFor } from '../core/manifest.js';
import type { BlobDownloadParams, BlobDownloadResult, DownloadOptions, DownloadTrail } from '../fetch/download.js';
import type { JournalSnapshot } from '../fetch/journal.js';
import { RangeSet } from '../fetch/range-set.js';
import { emptyStats } from '../fetch/stats.js';
import { adoptBlob } from './blob-store.js';
import { manifestPath, partPath, type CacheLayout } from './cache-root.js';
import type { PlannedDownload, VerifiedAgainst } from './download-planner.js';
import { PartialBlobRecord } from './partial-blob.js';

/**
 * A planned download the cache's full disk stopped, its verified pieces still in its part
 * (tmp/<id>.part) under the id's lock: the caller moves them to --out, then calls release.
 */
export interface PlanSpill {
  part: string;
  /** The verified pieces' bytes (only those: no byte a check did not pass), as a journal says them. */
  partial: JournalSnapshot;
  /** The download's counters and the bytes each source sent. */
  trail: DownloadTrail;
  /** Removes what is left of the part and its journal, then lets the id's lock go. */
  release(): Promise<void>;
}

/**
 * `onDiskFull`: offered the verified pieces when the cache's disk fills up; true when the
 * caller takes them (and calls release), false to have them discarded as any other failure's.
 */
export async function downloadWithPlan(
  layout: CacheLayout,
  plan: PlannedDownload,
  options: DownloadOptions & Pick<BlobDownloadParams, 'url'>,
  onDiskFull?: (spill: PlanSpill) => boolean,
): Promise<BlobDownloadResult> {
  const [{ startBlobDownload, discardPart }, { holdPartialLock }] = await Promise.all([
    import('../fetch/download.js'),
    import('./single-flight.js'),
  ]);
  const part = partPath(layout, plan.id);
  const manifest = plan.expected.manifest;
  let size = plan.expected.size;
  let record: PartialBlobRecord | undefined;
  const pending: Array<[number, string]> = [];
  // Every piece verified (what the record says, and what a spill may keep).
  const verified = new Set<number>();
  const trail: DownloadTrail = { stats: emptyStats() };
  // A piece is announced (the planner tells the control plane) only once the record the
  // agent serves from says so: a peer told of a piece must find it here.
  const markVerified = (index: number, digest: string): void => {
    verified.add(index);
    // The part is preallocated to the blob's size before any piece lands.
    size ??= sizeOnDisk(part);
    if (record === undefined && size !== undefined) {
      record = new PartialBlobRecord(
        layout,
        plan.id,
        size,
        manifest?.pieceSize ?? pieceSizeFor(size),
        manifest?.pieces,
      );
      for (const [i, d] of pending.splice(0)) record.markVerified(i, d);
    }
    if (!record) {
      pending.push([index, digest]);
      return;
    }
    record.markVerified(index, digest);
    record.flush();
    plan.pieceVerified(index, digest, { size: size!, pieceSize: manifest?.pieceSize ?? pieceSizeFor(size!) });
  };
  let unlock: (() => void) | undefined;
  // Set when the caller took the verified pieces: the lock is theirs to let go.
  let spilled = false;
  try {
    // Released after the record is removed: while it is held, gc leaves the part and the record.
    unlock = await holdPartialLock(layout, plan.id, options.signal);
    const handle = startBlobDownload({
      ...options,
      sources: plan.sources,
      partPath: part,
      trail,
      expected: plan.expected,
      produceManifest: true,
      sourceWaitMs: plan.sourceWaitMs,
      onProgress: (progress) => {
        size ??= progress.totalBytes;
        plan.progress?.(progress.transferredBytes);
        options.onProgress?.(progress);
      },
      onPieceVerified: markVerified,
      onSourceDropped: (id, reason) => plan.dropped(id, reason),
      pieceDigest: plan.pieceDigest && ((index, layout) => plan.pieceDigest!(index, layout)),
      digestFromPieces: plan.digestFromPieces && ((pieces, layout) => plan.digestFromPieces!(pieces, layout)),
    });
    plan.started(handle);
    let result: BlobDownloadResult | undefined;
    try {
      result = await handle.result;
      record?.flush();
      await plan.finished(result);
    } catch (err) {
      // Bytes that could not be trusted (or checked: complete, but refused by the planner)
      // are not kept for a resume either; nor, on a full disk, bytes that are not moved to
      // --out (README, Known limits) and would hold the cache's disk full for every later
      // fetch. Removed here, under the lock: after it another process may own the part.
      const code = (err as { code?: string }).code;
      if (code === 'LOOM_ERR_DISK_FULL' && result === undefined && onDiskFull) {
        const partial = verifiedPart(trail.partial, verified);
        if (partial) {
          // The record goes first: it must not announce pieces of a part about to move.
          record?.remove();
          const release = unlock;
          spilled = onDiskFull({
            part,
            partial,
            trail,
            release: async () => {
              await discardPart(part);
              release?.();
            },
          });
        }
      }
      if (result === undefined && code === 'LOOM_ERR_DIGEST_MISMATCH') await refuted(plan, err);
      if (
        !spilled &&
        (code === 'LOOM_ERR_DIGEST_MISMATCH' ||
          code === 'LOOM_ERR_DISK_FULL' ||
          result !== undefined ||
          plan.discardOnFailure)
      ) {
        await discardPart(part);
      }
      throw err;
    }
    await adoptBlob(layout, part, result.sha256!);
    if (result.manifest) keepManifest(layout, result, plan.verifiedAgainst);
    return result;
  } finally {
    record?.remove();
    if (!spilled) unlock?.();
    await plan.close();
  }
}

/**
 * What a failed download's part holds of verified pieces: the snapshot with only their
 * ranges (a piece whose bytes are not all written is not one). Undefined when there is none.
 */
function verifiedPart(
  partial: JournalSnapshot | undefined,
  verified: ReadonlySet<number>,
): JournalSnapshot | undefined {
  if (!partial || verified.size === 0) return undefined;
  const written = new RangeSet(partial.ranges);
  const kept = new RangeSet();
  for (const index of verified) {
    const [start, end] = pieceRange({ size: partial.size, pieceSize: partial.pieceSize }, index);
    if (start < end && written.covers(start, end)) kept.add(start, end);
  }
  if (kept.size === 0) return undefined;
  return { ...partial, ranges: kept.toJSON(), verified: partial.verified.filter((i) => verified.has(i)) };
}

/**
 * The engine's whole-file mismatch under a pin with a manifest (its `expected` is the pin, not
 * a piece's digest): every piece passed the manifest, so the manifest is not the pin's.
 */
async function refuted(plan: PlannedDownload, err: unknown): Promise<void> {
  const { sha256, manifest, pinned } = plan.expected;
  if (!manifest || !pinned || !(err instanceof LoomError) || err.expected !== sha256) return;
  const { actual } = err;
  if (actual === undefined || actual === sha256) return;
  // Telling the fleet is a courtesy: it never changes what this fetch does next.
  await plan.manifestRefuted?.(actual).catch(() => undefined);
}

function sizeOnDisk(path: string): number | undefined {
  const size = statSync(path, { throwIfNoEntry: false })?.size;
  return size === undefined || size === 0 ? undefined : size;
}

/** `manifests/<digest>.json`: what the agent publishes with the blob after a restart. */
export function keepManifest(
  layout: CacheLayout,
  result: Pick<BlobDownloadResult, 'manifest'>,
  verifiedAgainst: VerifiedAgainst,
): void {
  const dir = layout.manifests;
  const file = manifestPath(layout, result.manifest!.digest);
  const temp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(temp, JSON.stringify({ ...result.manifest, verifiedAgainst }));
    renameSync(temp, file);
  } catch {
    // Only a convenience for the agent: a full disk must not fail a finished download.
    rmSync(temp, { force: true });
  }
}
