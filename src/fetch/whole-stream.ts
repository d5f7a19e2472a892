// A server that ignores Range sends the whole file as one stream from byte 0: it cannot be
// split between workers or sources, nor resumed. After a failure it is asked for again and
// written from the start on an empty part file (the download's restart), within the same
// retry budget as a range.
import { BadResponseError, cancelled } from '../core/errors.js';
import type { ProbeResult } from '../sources/source.js';
import type { DownloadProgress } from './download-progress.js';
import type { BlobDownloadResult } from './download-types.js';
import type { PartFile } from './part-file.js';
import type { Probed } from './probe.js';
import { pump } from './range-pump.js';
import { decideAfterFailure } from './retry-budget.js';
import type { RetryOptions } from './retry-policy.js';
import { RangeTask } from './scheduler.js';
import type { SlabPool } from './slab-pool.js';
import type { SourceState } from './source-set.js';
import type { DownloadStats } from './stats.js';

/** What the stream needs from its download. */
export interface WholeStreamHost {
  readonly stats: DownloadStats;
  readonly progress: DownloadProgress;
  readonly slabs: SlabPool;
  readonly retry: RetryOptions;
  /** Aborted when the download fails. */
  readonly signal: AbortSignal;
  readonly failure: unknown;
  /** Empties the part file (and everything learnt from it) for `probe`'s stream. */
  restart(probe: ProbeResult): Promise<PartFile>;
  record(state: SourceState, at: number, length: number): void;
  /** All `size` bytes are on disk. */
  finish(size: number, finalUrl: string): Promise<BlobDownloadResult>;
}

/** Streams the whole file from `probed.state`, starting with the probe's own response. */
export async function streamWhole(
  host: WholeStreamHost,
  probed: Probed,
  chunkSize: number,
): Promise<BlobDownloadResult> {
  const { state } = probed;
  const source = state.slot.source;
  const budget = { attempts: 0 };
  let current: ProbeResult | undefined = probed.probe;
  for (;;) {
    try {
      if (!current) {
        host.stats.requests++;
        current = await source.probe([0, chunkSize], state.signal);
        if (current.acceptsRanges) {
          throw new BadResponseError(`${source.label} alternates between honouring and ignoring Range`);
        }
      }
      const { body } = current;
      const part = await host.restart(current);
      const task = new RangeTask(0, body.end ?? Infinity);
      host.progress.activeRequests++;
      try {
        await pump(body, task, {
          part,
          slabs: host.slabs,
          label: source.label,
          onWritten: (at, length) => host.record(state, at, length),
          onProgress: () => undefined,
        });
      } finally {
        host.progress.activeRequests--;
      }
      if (body.end === undefined) await part.truncate(task.pos);
      return await host.finish(task.pos, current.finalUrl);
    } catch (err) {
      current?.body.stream.destroy();
      current = undefined;
      if (host.signal.aborted) throw host.failure ?? cancelled();
      const decision = decideAfterFailure(
        err,
        budget,
        { failuresInARow: 0, maxConcurrency: 1 },
        host.retry,
        'the whole-file stream',
        source.url,
      );
      if (decision.kind === 'fatal') throw decision.error;
      if (decision.kind === 'drop-source') throw decision.reason;
      await host.progress.backoff(budget, err, decision.delayMs, host.signal);
    }
  }
}
