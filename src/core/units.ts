// The human units of Loom's command line and output. Input: sizes (`8MiB`, `64M`, `1g`,
// `4096`) and durations (`500ms`, `30s`, `2m`; a bare number is seconds, as in curl, wget
// and aria2c). Output: one convention everywhere a person reads a size or a rate (the
// progress bar, the summary line, `loom cache`): decimal SI units (kB, MB, GB; MB/s), the
// units of the README's tables and of --json's `mbPerSecond`.
import { UsageError } from './errors.js';

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/**
 * Bytes in a size such as `10MiB`, `64M` (binary: M = MiB, as aria2 and curl read it),
 * `1.5GB` (decimal) or `4096`.
 */
export function parseSize(input: string | number, what = 'size'): number {
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input) || input < 0)
      throw new UsageError(`${what} must be a whole number of bytes, got ${input}`);
    return input;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(input);
  const unit = match ? SIZE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new UsageError(`${what} "${input}" is not a size`, { hint: 'write it like 10MiB, 64M, 1GiB or 4096' });
  }
  return Math.round(Number(match[1]) * unit);
}

const DURATION_UNITS: Record<string, number> = { '': 1000, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * The longest duration Loom takes: Node's timers hold a signed 32-bit count of milliseconds,
 * and a longer delay becomes 1 ms (with a warning), so `--stall-timeout 600h` meant "stall
 * at once", not "never". Refused, not clamped: every duration ends up in a timer.
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;
export const DURATION_TOO_LONG = 'must be at most 596h (about 24.8 days, the longest a timer can wait)';

/**
 * Milliseconds in a duration. Text is what a person typed: `30s`, `500ms`, `2m`, `1h`, and a
 * bare number is seconds (`5` = 5 s, `0.5` = 500 ms). A JavaScript number is milliseconds.
 */
export function parseDuration(input: string | number, what = 'duration'): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0)
      throw new UsageError(`${what} must be a non-negative number of milliseconds`);
    if (input > MAX_DURATION_MS) throw new UsageError(`${what} ${input} ms ${DURATION_TOO_LONG}`);
    return input;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(input);
  const unit = match ? DURATION_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new UsageError(`${what} "${input}" is not a duration`, {
      hint: 'write it like 30 (seconds), 500ms, 30s or 2m',
    });
  }
  const ms = Math.round(Number(match[1]) * unit);
  if (ms > MAX_DURATION_MS) throw new UsageError(`${what} "${input}" ${DURATION_TOO_LONG}`);
  return ms;
}

/** A size as a flag takes it (the inverse of parseSize): `10MiB`, `512KiB`, `1000`. */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return String(bytes);
}

/** A wait as people read it: `2 s`, `300 ms` (never under 100 ms). */
export function formatWait(ms: number): string {
  return ms >= 950 ? `${Math.round(ms / 1000)} s` : `${Math.max(100, Math.round(ms / 100) * 100)} ms`;
}

/** A duration as a flag takes it (the inverse of parseDuration): `30s`, `2m`, `500ms`. */
export function formatDuration(ms: number): string {
  for (const [unit, factor] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= factor && ms % factor === 0) return `${ms / factor}${unit}`;
  }
  return `${ms}ms`;
}

const DECIMAL_UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

/** `1500000000` -> `1.50 GB`, `512` -> `512 B`: decimal units, three significant digits. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let i = 0;
  while (value >= 999.5 && i < DECIMAL_UNITS.length - 1) {
    value /= 1000;
    i++;
  }
  if (i === 0) return `${Math.round(bytes)} B`;
  return `${value.toPrecision(3)} ${DECIMAL_UNITS[i]}`;
}

/** Bytes per second in the same units: `41200000` -> `41.2 MB/s`, `900` -> `900 B/s`. */
export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(Math.max(0, bytesPerSecond))}/s`;
}

/** Seconds for people: `0.42 s`, `12.3 s`, `4m 05s`, `1h 02m`. */
export function formatSeconds(seconds: number): string {
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)}m ${String(whole % 60).padStart(2, '0')}s`;
  return `${Math.floor(whole / 3600)}h ${String(Math.floor((whole % 3600) / 60)).padStart(2, '0')}m`;
}

/** `1 attempt`, `2 attempts`, `0 blobs`. */
export function plural(count: number, singular: string, pluralForm = `${singular}s`): string {
  return `${count} ${count === 1 ? singular : pluralForm}`;
}
