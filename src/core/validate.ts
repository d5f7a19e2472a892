// Small checks for the fetch path's options and files. The fetch path avoids zod on purpose:
// importing it costs ~14 MB of RSS, a seventh of the memory budget of a download. The
// control plane, where that does not matter, validates requests with zod.
import { UsageError } from './errors.js';

export function checkInteger(value: unknown, field: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`invalid option ${field}: must be a whole number from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

export function checkBoolean(value: unknown, field: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw new UsageError(`invalid option ${field}: must be true or false`);
  return value;
}

export function checkOneOf<T extends string>(value: unknown, field: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !allowed.includes(value as T)) {
    throw new UsageError(`invalid option ${field}: must be one of ${allowed.join(', ')}`);
  }
  return value as T;
}

export function checkKnownKeys(input: object, known: readonly string[], what: string): void {
  for (const key of Object.keys(input)) {
    if (!known.includes(key)) throw new UsageError(`unknown ${what} "${key}"; known: ${known.join(', ')}`);
  }
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
