// The terminal progress bar: bytes, rate, ETA and open connections. Drawn only when both
// stdout and stderr are terminals; piped or --json runs print nothing of it.
import { createRequire } from 'node:module';
import type { FetchProgress } from '../fetch/download.js';
import { formatBytes } from '../core/units.js';

export interface ProgressView {
  update(progress: FetchProgress): void;
  /** Replaces the bar's label, e.g. "waiting for another process". */
  status(text: string): void;
  stop(): void;
}

export function wantsProgressBar(flags: { quiet?: boolean; json?: boolean }): boolean {
  return !flags.quiet && !flags.json && Boolean(process.stderr.isTTY) && Boolean(process.stdout.isTTY);
}

export function createProgressView(label: string, enabled: boolean): ProgressView {
  if (!enabled) return { update: () => undefined, status: () => undefined, stop: () => undefined };
  // Loaded only when a bar is drawn: a piped or --json run does not pay its memory.
  const cliProgress = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: '{label} {bar} {percentage}% | {done}/{totalText} | {rate}/s | ETA {eta_formatted} | {conns} conns',
      hideCursor: true,
      etaBuffer: 50,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let lastBytes = 0;
  let lastAt = performance.now();
  let rate = 0;
  let currentLabel = label;
  return {
    update(progress) {
      const total = progress.totalBytes ?? 0;
      const now = performance.now();
      if (now - lastAt >= 250) {
        const instant = ((progress.transferredBytes - lastBytes) * 1000) / (now - lastAt);
        rate = rate === 0 ? instant : rate * 0.7 + instant * 0.3;
        lastBytes = progress.transferredBytes;
        lastAt = now;
      }
      // Every byte is on disk: what is left is the hash's tail and the flush before the rename.
      const finishing = progress.totalBytes !== undefined && progress.doneBytes >= progress.totalBytes;
      const payload = {
        label: finishing ? `${currentLabel} (verifying, flushing)` : currentLabel,
        done: formatBytes(progress.doneBytes),
        totalText: progress.totalBytes === undefined ? '?' : formatBytes(total),
        rate: formatBytes(Math.round(rate)),
        conns: progress.activeRequests,
      };
      if (!started) {
        bar.start(Math.max(total, 1), progress.doneBytes, payload);
        started = true;
      } else {
        bar.setTotal(Math.max(total, 1));
        bar.update(progress.doneBytes, payload);
      }
    },
    status(text) {
      currentLabel = text;
      if (started) bar.update({ label: text });
      else process.stderr.write(`${text}\n`);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
