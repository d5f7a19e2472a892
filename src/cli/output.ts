// How the CLI speaks: short human lines on stderr, one JSON document on stdout with --json,
// and an exit code a script can switch on (see the README's table).
import { EXIT, INTERNAL_ERROR_CODE, LoomError } from '../core/errors.js';

export interface OutputFlags {
  json?: boolean;
  quiet?: boolean;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

export function say(flags: OutputFlags, line: string): void {
  if (!flags.quiet && !flags.json) process.stderr.write(`${line}\n`);
}

/** Prints an error the way the user asked for, and returns the exit code for it. */
export function reportError(err: unknown, flags: OutputFlags): number {
  const error = err instanceof LoomError ? err : undefined;
  const message = error ? error.message : err instanceof Error ? err.message : String(err);
  process.stderr.write(`loom: error: ${message}\n`);
  if (!error && process.env.LOOM_DEBUG) process.stderr.write(`${(err as Error).stack ?? ''}\n`);
  if (flags.json) printJson({ ok: false, error: error ? error.toJSON() : { code: INTERNAL_ERROR_CODE, message } });
  if (error) return error.exitCode;
  return EXIT.internal;
}
