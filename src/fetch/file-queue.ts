// Many files through one RequestPool (`loom pull` of a Hub repo or an S3 prefix): largest
// first, each let in when the pool has a slot no running download wants, so the big files
// start at once, the small ones fill the gaps, and the pool stays busy to the last byte.
// One progress for the whole set: totals, and each active file's bytes. The first failure
// stops the rest (their partial bytes stay for a resume) and is what the queue throws.
import { setMaxListeners } from 'node:events';
import { cancelled } from '../core/errors.js';
import { RequestPool, type PoolMember } from './request-pool.js';

export interface QueuedFile {
  path: string;
  size: number;
}

export interface ActiveFile {
  path: string;
  doneBytes: number;
  size: number;
}

export interface QueueProgress {
  filesDone: number;
  filesTotal: number;
  /** Bytes in place (files done, and what the active ones have on disk). */
  bytesDone: number;
  bytesTotal: number;
  /** Files being fetched now, largest first. */
  active: ActiveFile[];
}

export interface FileQueueOptions<F extends QueuedFile, R> {
  pool: RequestPool;
  /** Files in progress at once, at most. */
  maxActive: number;
  signal?: AbortSignal;
  /** Fetches one file: its downloads take their request slots from `slots`. */
  run(file: F, context: { slots: PoolMember; signal: AbortSignal; onBytes: (doneBytes: number) => void }): Promise<R>;
  onDone?(file: F, result: R, progress: { done: number; total: number }): void;
  /** About ten times a second while bytes move, and after every file. */
  onProgress?(progress: QueueProgress): void;
  /** Files counted as done before the queue starts (already in place). */
  alreadyDone?: { files: number; bytes: number };
}

const REPORT_INTERVAL_MS = 100;

/** Runs every file; resolves with the results in the order the files finished. */
export async function runFileQueue<F extends QueuedFile, R>(
  files: readonly F[],
  options: FileQueueOptions<F, R>,
): Promise<R[]> {
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  const onUserAbort = (): void => stop.abort();
  options.signal?.addEventListener('abort', onUserAbort, { once: true });
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  setMaxListeners(0, signal);

  const done = { files: options.alreadyDone?.files ?? 0, bytes: options.alreadyDone?.bytes ?? 0 };
  const filesTotal = done.files + files.length;
  const bytesTotal = done.bytes + files.reduce((sum, f) => sum + f.size, 0);
  const active = new Map<string, ActiveFile>();
  let lastReport = 0;
  const report = (force: boolean): void => {
    if (!options.onProgress || (!force && performance.now() - lastReport < REPORT_INTERVAL_MS)) return;
    lastReport = performance.now();
    const list = [...active.values()].sort((a, b) => b.size - a.size);
    options.onProgress({
      filesDone: done.files,
      filesTotal,
      bytesDone: done.bytes + list.reduce((sum, a) => sum + a.doneBytes, 0),
      bytesTotal,
      active: list,
    });
  };

  const results: R[] = [];
  let failure: unknown;
  let running = 0;
  let settled: () => void = () => undefined;
  const start = async (file: F, slots: PoolMember): Promise<void> => {
    const entry: ActiveFile = { path: file.path, doneBytes: 0, size: file.size };
    active.set(file.path, entry);
    try {
      const result = await options.run(file, {
        slots,
        signal,
        onBytes: (doneBytes) => {
          entry.doneBytes = doneBytes;
          report(false);
        },
      });
      active.delete(file.path);
      done.files++;
      done.bytes += file.size;
      results.push(result);
      options.onDone?.(file, result, { done: results.length, total: files.length });
      report(true);
    } catch (err) {
      active.delete(file.path);
      // The first failure is the one to report; the others are mostly the stop it caused.
      failure ??= err;
      stop.abort();
    } finally {
      slots.close();
      running--;
      settled();
    }
  };

  try {
    const queue = [...files].sort((a, b) => b.size - a.size);
    for (const file of queue) {
      while (running >= options.maxActive && !signal.aborted) {
        await new Promise<void>((resolve) => (settled = resolve));
      }
      if (signal.aborted) break;
      const slots = await options.pool.admit(signal);
      if (!slots) break;
      running++;
      void start(file, slots);
    }
    while (running > 0) await new Promise<void>((resolve) => (settled = resolve));
  } finally {
    options.signal?.removeEventListener('abort', onUserAbort);
  }
  if (failure !== undefined) throw failure;
  if (options.signal?.aborted) throw cancelled();
  return results;
}
