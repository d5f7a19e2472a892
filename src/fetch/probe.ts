// The first request of a download, made when its size is unknown or its digest is (so the
// server's answer tells both the size and whether it honours Range): which bytes it asks for,
// and which source answers it. Its response is not wasted: a worker carries on with it.
import { cancelled, HttpStatusError, type LoomError } from '../core/errors.js';
import type { ProbeResult } from '../sources/source.js';
import type { DownloadProgress } from './download-progress.js';
import type { JournalState } from './journal.js';
import { RangeSet } from './range-set.js';
import { decideAfterFailure } from './retry-budget.js';
import type { RetryOptions } from './retry-policy.js';
import { RangeTask } from './scheduler.js';
import type { SourceSet, SourceState } from './source-set.js';
import type { DownloadStats } from './stats.js';

const PROBE_SIZE = 1024 * 1024;

/** A source's answer to the first request. */
export interface Probed {
  state: SourceState;
  probe: ProbeResult;
}

/** What the probe needs from its download. */
export interface ProbeHost {
  readonly sources: SourceSet;
  readonly stats: DownloadStats;
  readonly progress: DownloadProgress;
  readonly retry: RetryOptions;
  /** Aborted when the download fails. */
  readonly signal: AbortSignal;
  readonly failure: unknown;
  dropSource(state: SourceState, reason: LoomError): void;
  /** The error when no source is left. */
  noSource(): LoomError;
}

/**
 * The probe asks for the first missing bytes (on a resume that is where work starts), at
 * most one chunk and at most 1 MiB, within one piece: small enough that a small file is
 * still shared out evenly once its size is known.
 */
function firstRange(journal: JournalState | undefined, chunkSize: number): readonly [number, number] {
  const length = Math.min(chunkSize, PROBE_SIZE);
  const first = journal ? new RangeSet(journal.ranges).missing(journal.size)[0] : undefined;
  if (!journal || !first || journal.pieceSize <= 0) return [0, length];
  const pieceEnd = (Math.floor(first[0] / journal.pieceSize) + 1) * journal.pieceSize;
  return [first[0], Math.min(first[1], first[0] + length, pieceEnd)];
}

/**
 * Makes the first request, for the first missing bytes of `journal`'s file (byte 0 without
 * one). A 416 there means the file shrank since the journal was written: `forgetJournal`,
 * and ask again from byte 0; the journal returned is then undefined.
 */
export async function probeFirst(
  host: ProbeHost,
  journal: JournalState | undefined,
  chunkSize: number,
  forgetJournal: () => Promise<void>,
): Promise<{ probed: Probed; journal: JournalState | undefined }> {
  const range = firstRange(journal, chunkSize);
  try {
    return { probed: await probeSources(host, range), journal };
  } catch (err) {
    if (!(err instanceof HttpStatusError && err.status === 416 && range[0] > 0)) throw err;
    await forgetJournal();
    return { probed: await probeSources(host, firstRange(undefined, chunkSize)), journal: undefined };
  }
}

/** The probe's response as a task of the plan: the worker of its source carries on with it. */
export function probeTask(probe: ProbeResult, pieceSize: number): RangeTask {
  const { body } = probe;
  return new RangeTask(body.start, body.end ?? body.start, undefined, Math.floor(body.start / pieceSize));
}

/** Probes the sources in order of preference (origins first among equals) until one answers. */
async function probeSources(host: ProbeHost, range: readonly [number, number]): Promise<Probed> {
  const order = [...host.sources.live()].sort(
    (a, b) =>
      Number(b.slot.kind === 'origin') - Number(a.slot.kind === 'origin') || a.slot.preference - b.slot.preference,
  );
  for (const [i, state] of order.entries()) {
    const budget = { attempts: 0 };
    for (;;) {
      try {
        host.stats.requests++;
        return { state, probe: await state.slot.source.probe(range, state.signal) };
      } catch (err) {
        if (host.signal.aborted) throw host.failure ?? cancelled();
        const what = `the first request (bytes ${range[0]}-${range[1] - 1})`;
        const decision = decideAfterFailure(err, budget, state, host.retry, what, state.slot.source.url);
        if (decision.kind === 'fatal') throw decision.error;
        if (decision.kind === 'drop-source') {
          // The last one's own error says most (a 404, a 416 after the file shrank); with
          // peers only (--no-origin), that no source can serve it (see noSourceError).
          if (i === order.length - 1 && !host.sources.peersOnly()) throw decision.reason;
          host.dropSource(state, decision.reason);
          break;
        }
        await host.progress.backoff(budget, err, decision.delayMs, host.signal);
      }
    }
  }
  throw host.noSource();
}
