// Parses the human units that flags and options accept: sizes (`8MiB`, `64M`, `1g`)
// and durations (`500ms`, `30s`, `2m`). Both also take a bare integer (bytes, milliseconds).
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

const DURATION_UNITS: Record<string, number> = { '': 1, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds in a duration such as `30s`, `500ms`, `2m` or `1500`. */
export function parseDuration(input: string | number, what = 'duration'): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0)
      throw new UsageError(`${what} must be a non-negative number of milliseconds`);
    return input;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(input);
  const unit = match ? DURATION_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new UsageError(`${what} "${input}" is not a duration`, { hint: 'write it like 500ms, 30s or 2m' });
  }
  return Math.round(Number(match[1]) * unit);
}

/** `1073741824` -> `1.00 GiB`, for human output. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${value.toFixed(2)} ${units[i]}`;
}
