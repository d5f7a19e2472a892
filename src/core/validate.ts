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

/**
 * Throws a UsageError naming `what` (a flag, a variable, a file) when `value` cannot go into an
 * HTTP header: a control character (a newline pasted into HF_TOKEN, `$'tok\nen'`) or one
 * beyond Latin-1. Node refuses such a header only when the request is made, with a message
 * naming no flag, and the failure was reported as an internal error. `allowTab`: a header
 * value may hold a tab; a token may not.
 */
export function checkHeaderText(value: string, what: string, { allowTab = false } = {}): string {
  // eslint-disable-next-line no-control-regex
  const control = allowTab ? /[\u0000-\u0008\u000a-\u001f\u007f]/ : /[\u0000-\u001f\u007f]/;
  if (control.test(value))
    throw new UsageError(`${what} contains a control character (a line break?)`, {
      hint: 'give it on one line, without control characters',
    });
  if (/[^\u0020-\u00ff\t]/.test(value))
    throw new UsageError(`${what} contains a character an HTTP header cannot carry`, {
      hint: 'check it was copied whole and unchanged',
    });
  return value;
}

/** An on/off environment variable: 1, true, yes or on (any case) is on, as HF_HUB_OFFLINE reads it. */
export function envFlag(value: string | undefined): boolean {
  return ['1', 'true', 'yes', 'on'].includes((value ?? '').trim().toLowerCase());
}

/**
 * A node id: what the control plane accepts in a token's name and what an agent or a fetch
 * may register as, one rule for both sides.
 */
export const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
