// How a running download shows its progress on stderr. On a terminal: one bar line redrawn in
// place, fitted to the terminal's width (the bar itself goes first, then the file name; rate,
// ETA and connections stay as long as they can), cleared cleanly when the download ends or is
// interrupted. Without a terminal (CI, container logs): a plain line every 5 s or every 10%.
// Both say retries and their waits as they happen ("retrying 3 ranges: 503, next in 2 s").
import type { FetchProgress, RetryWait } from '../fetch/download.js';
import { formatBytes, formatRate, formatWait, plural } from '../core/units.js';
import type { ProgressMode } from './fetch-flags.js';
import { DEFAULTS } from '../core/defaults.js';

export interface ProgressView {
  update(progress: FetchProgress): void;
  /** Says what the download is doing instead of moving, e.g. "waiting for another process". */
  status(text: string): void;
  /** A line of its own that stays (above the bar): something the user should know once. */
  note(text: string): void;
  /** Removes the bar (if any) and draws no more; returns true when something was erased. */
  clear(): boolean;
  stop(): void;
}

/** The mode `auto` resolves to: a bar on a terminal, lines otherwise, nothing with -q or --json. */
export function resolveProgressMode(
  flags: { quiet?: boolean; json?: boolean; progress?: ProgressMode },
  stream: { isTTY?: boolean } = process.stderr,
): Exclude<ProgressMode, 'auto'> {
  const mode = flags.progress ?? 'auto';
  if (mode !== 'auto') return mode;
  if (flags.quiet || flags.json) return 'none';
  return stream.isTTY ? 'bar' : 'lines';
}

/** What one frame of the bar shows. */
export interface BarState {
  label: string;
  doneBytes: number;
  totalBytes: number | undefined;
  /** Bytes per second over the last few seconds; 0 while unknown. */
  rate: number;
  activeRequests: number;
  retries: number;
  /** Ranges waiting out a backoff right now. */
  retrying?: RetryWait;
  /** Replaces the rate and ETA while the download is not moving (verifying, waiting). */
  phase?: string;
}

/** `retrying 3 ranges: 503, next in 2 s`. */
export function formatRetryWait(wait: RetryWait): string {
  return `retrying ${plural(wait.ranges, 'range')}: ${wait.reason}, next in ${formatWait(wait.nextInMs)}`;
}

/** `7s`, `4m05s`, `1h02m`: an ETA that is always finite and short. */
export function formatEta(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 100 * 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return '>99h';
}

function etaOf(state: BarState): string | undefined {
  if (state.totalBytes === undefined || state.rate <= 0) return undefined;
  const seconds = (state.totalBytes - state.doneBytes) / state.rate;
  return Number.isFinite(seconds) ? `ETA ${formatEta(seconds)}` : undefined;
}

function truncate(text: string, width: number): string {
  if (text.length <= width) return text;
  return width <= 1 ? text.slice(0, width) : `${text.slice(0, width - 1)}…`;
}

/**
 * One frame of the bar, at most `width` characters. Below what everything needs, parts go in
 * this order: the bar, the file name (at most 30 characters; shortened, then dropped), retries,
 * connections, the total, the ETA; the percentage and the rate go last.
 */
export function renderBar(state: BarState, width: number): string {
  const total = state.totalBytes;
  const percent =
    total === undefined
      ? undefined
      : `${String(Math.floor((100 * state.doneBytes) / Math.max(total, 1))).padStart(3)}%`;
  const parts = {
    done: formatBytes(state.doneBytes),
    total: total === undefined ? undefined : `/${formatBytes(total)}`,
    rate: state.phase ?? (state.rate > 0 ? formatRate(state.rate) : undefined),
    eta: state.phase ? undefined : etaOf(state),
    conns: plural(state.activeRequests, 'conn'),
    retries: state.retrying
      ? formatRetryWait(state.retrying)
      : state.retries > 0
        ? plural(state.retries, 'retry', 'retries')
        : undefined,
  };
  const compose = (keep: Keep, label: string, barWidth: number): string => {
    const fields = [
      label || undefined,
      barWidth > 0 && total !== undefined ? barOf(state.doneBytes / Math.max(total, 1), barWidth) : undefined,
      percent,
      keep.done ? `${parts.done}${keep.total && parts.total ? parts.total : ''}` : undefined,
      parts.rate,
      keep.eta ? parts.eta : undefined,
      keep.conns ? parts.conns : undefined,
      keep.retries ? parts.retries : undefined,
    ];
    return fields.filter((f): f is string => f !== undefined).join('  ');
  };
  // A wait under way says more than the connection count: it stays longer.
  const drops: Keep[] = [
    { done: true, total: true, eta: true, conns: true, retries: true },
    state.retrying
      ? { done: true, total: true, eta: true, conns: false, retries: true }
      : { done: true, total: true, eta: true, conns: true, retries: false },
    ...(state.retrying ? [{ done: true, total: false, eta: false, conns: false, retries: true }] : []),
    { done: true, total: true, eta: true, conns: false, retries: false },
    { done: true, total: false, eta: true, conns: false, retries: false },
    { done: true, total: false, eta: false, conns: false, retries: false },
    // Percentage and rate only (the bytes stay when the size is unknown: there is no percentage).
    { done: total === undefined, total: false, eta: false, conns: false, retries: false },
  ];
  for (const keep of drops) {
    const bare = compose(keep, '', 0);
    // What is left for the name and the bar, each with its two-space separator.
    const room = width - bare.length - 2;
    if (room < 0) continue;
    const label = state.label;
    const wanted = Math.min(label.length, 30);
    if (total !== undefined && room - wanted - 2 >= 12) {
      const shown = truncate(label, wanted);
      return compose(keep, shown, Math.min(40, room - shown.length - 2));
    }
    if (room >= Math.min(wanted, 8) && wanted > 0) return compose(keep, truncate(label, Math.min(room, wanted)), 0);
    // Without a name first, the percentage's padding would only indent the line.
    return bare.trimStart();
  }
  return truncate(compose(drops[drops.length - 1]!, '', 0).trimStart(), width);
}

interface Keep {
  done: boolean;
  total: boolean;
  eta: boolean;
  conns: boolean;
  retries: boolean;
}

function barOf(fraction: number, width: number): string {
  const inner = Math.max(1, width - 2);
  const filled = Math.min(inner, Math.floor(Math.max(0, fraction) * inner));
  return `[${'#'.repeat(filled)}${'-'.repeat(inner - filled)}]`;
}

/** Follows the transfer rate: an average over about the last two seconds, sampled at most 4 times a second. */
class RateMeter {
  private lastBytes = 0;
  private lastAt = performance.now();
  rate = 0;

  sample(transferredBytes: number): void {
    const now = performance.now();
    const elapsed = now - this.lastAt;
    if (elapsed < 250) return;
    const instant = ((transferredBytes - this.lastBytes) * 1000) / elapsed;
    this.rate = this.rate === 0 ? instant : this.rate * 0.8 + instant * 0.2;
    this.lastBytes = transferredBytes;
    this.lastAt = now;
  }
}

interface Stream {
  write(text: string): unknown;
  columns?: number;
}

const NONE: ProgressView = {
  update: () => undefined,
  status: () => undefined,
  note: () => undefined,
  clear: () => false,
  stop: () => undefined,
};

export function createProgressView(
  label: string,
  mode: Exclude<ProgressMode, 'auto'>,
  stream: Stream = process.stderr,
): ProgressView {
  if (mode === 'none') return NONE;
  return mode === 'bar' ? barView(label, stream) : linesView(label, stream);
}

function barView(label: string, stream: Stream): ProgressView {
  const meter = new RateMeter();
  let last: FetchProgress | undefined;
  let phase: string | undefined;
  let drawn = false;
  let stopped = false;
  let lastDrawAt = 0;
  let shownWait = '';
  const draw = (force: boolean): void => {
    if (stopped || !last) return;
    const now = performance.now();
    if (!force && now - lastDrawAt < 100) return;
    lastDrawAt = now;
    const finishing = last.totalBytes !== undefined && last.doneBytes >= last.totalBytes;
    const width = Math.max(20, (stream.columns ?? 80) - 1);
    const line = renderBar(
      {
        label,
        doneBytes: last.doneBytes,
        totalBytes: last.totalBytes,
        rate: meter.rate,
        activeRequests: last.activeRequests,
        retries: last.retries,
        retrying: last.retrying,
        phase: finishing ? 'verifying' : phase,
      },
      width,
    );
    stream.write(`\r${line}\x1b[K`);
    drawn = true;
  };
  const clear = (): boolean => {
    const erased = drawn;
    if (drawn) stream.write('\r\x1b[K');
    drawn = false;
    stopped = true;
    return erased;
  };
  return {
    update(progress) {
      meter.sample(progress.transferredBytes);
      last = progress;
      phase = undefined;
      // A wait that starts, ends or changes is drawn at once, not at the next frame.
      const wait = progress.retrying ? `${progress.retrying.ranges} ${progress.retrying.reason}` : '';
      draw(wait !== shownWait);
      shownWait = wait;
    },
    status(text) {
      if (stopped) return;
      if (!last) {
        stream.write(`loom: ${text}\n`);
        return;
      }
      phase = text;
      draw(true);
    },
    note(text) {
      if (stopped) return;
      stream.write(`${drawn ? '\r\x1b[K' : ''}loom: ${text}\n`);
      drawn = false;
      draw(true);
    },
    clear,
    stop: () => void clear(),
  };
}

function linesView(label: string, stream: Stream): ProgressView {
  const meter = new RateMeter();
  let lastLineAt = performance.now();
  let lastTenth = 0;
  let stopped = false;
  let lastWait = '';
  let lastWaitAt = 0;
  return {
    update(progress) {
      if (stopped) return;
      meter.sample(progress.transferredBytes);
      const wait = progress.retrying;
      const key = wait ? `${wait.ranges} ${wait.reason}` : '';
      const now = performance.now();
      // A wait is said when it starts, and again when it changes (at most once a second).
      if (wait && key !== lastWait && (lastWait === '' || now - lastWaitAt >= 1000)) {
        stream.write(`loom: ${label}: ${formatRetryWait(wait)}\n`);
        lastWait = key;
        lastWaitAt = now;
      } else if (!wait) lastWait = '';
      const total = progress.totalBytes;
      const tenth = total ? Math.floor((10 * progress.doneBytes) / total) : 0;
      const due = now - lastLineAt >= DEFAULTS.progressLineIntervalMs || (tenth > lastTenth && tenth < 10);
      if (tenth > lastTenth) lastTenth = tenth;
      if (!due) return;
      lastLineAt = now;
      const parts = [
        total ? `${Math.floor((100 * progress.doneBytes) / total)}%` : undefined,
        total ? `${formatBytes(progress.doneBytes)} of ${formatBytes(total)}` : formatBytes(progress.doneBytes),
        meter.rate > 0 ? formatRate(meter.rate) : undefined,
        total && meter.rate > 0 ? `ETA ${formatEta((total - progress.doneBytes) / meter.rate)}` : undefined,
      ];
      stream.write(`loom: ${label}: ${parts.filter(Boolean).join(', ')}\n`);
    },
    status(text) {
      if (!stopped) stream.write(`loom: ${text}\n`);
    },
    note(text) {
      if (!stopped) stream.write(`loom: ${text}\n`);
    },
    clear() {
      stopped = true;
      return false;
    },
    stop() {
      stopped = true;
    },
  };
}
