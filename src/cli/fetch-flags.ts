// The flags of `loom fetch`, defined once: the full command line (commander) and the fast
// parser (node:util parseArgs) are both built from this table, so they accept the same
// spellings and check values with the same parsers. Also what the flags turn into: the URL,
// the output path and the fetch options.
import { existsSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DEFAULTS } from '../core/defaults.js';
import { UsageError } from '../core/errors.js';
import { parseDuration, parseSize } from '../core/units.js';
import type { FetchOptions } from '../fetch/options.js';

export interface FetchFlags {
  url?: string;
  out?: string;
  workers: number;
  chunkSize?: number;
  maxRequestSize?: number;
  sha256?: string;
  header: string[];
  caCert: string[];
  stallTimeout?: number;
  retries?: number;
  retryBaseDelay?: number;
  maxRetryAfter?: number;
  fsync: boolean;
  cache: boolean;
  cacheDir?: string;
  offline?: boolean;
  quiet?: boolean;
  json?: boolean;
  serve?: boolean;
  listen: string;
}

export interface FlagSpec {
  /** Commander's spelling: `-w, --workers <n>`, `--no-fsync`, `--json`. */
  flags: string;
  description: string;
  /** Turns the flag's text into its value; throws UsageError saying what is wrong. */
  parse?: (value: string) => unknown;
  /** Given more than once, the values are collected in a list (default: empty). */
  repeatable?: boolean;
  defaultValue?: unknown;
}

function integerIn(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) {
      throw new UsageError(`must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

function sizeArg(value: string): number {
  try {
    return parseSize(value);
  } catch {
    throw new UsageError('must be a size such as 10MiB, 64M or 1048576');
  }
}

function durationArg(value: string): number {
  try {
    return parseDuration(value);
  } catch {
    throw new UsageError('must be a duration such as 500ms, 30s or 2m');
  }
}

export const FETCH_FLAGS: readonly FlagSpec[] = [
  { flags: '-o, --out <path>', description: 'output file (default: the file name in the URL)' },
  { flags: '--url <url>', description: 'the URL (the original tool spelled it so; same as the argument)' },
  {
    flags: '-w, --workers <n>',
    description: `requests in flight, 1-${DEFAULTS.maxWorkers}`,
    parse: integerIn(1, DEFAULTS.maxWorkers),
    defaultValue: DEFAULTS.workers,
  },
  { flags: '--chunk-size <size>', description: 'planning and split unit (default 10MiB)', parse: sizeArg },
  {
    flags: '--max-request-size <size>',
    description: 'largest single request (default: the file split evenly over the workers)',
    parse: sizeArg,
  },
  { flags: '--sha256 <hex>', description: 'expected sha256 of the file; a mismatch keeps nothing' },
  { flags: '-H, --header <line>', description: "extra request header 'Name: value' (repeatable)", repeatable: true },
  { flags: '--ca-cert <file>', description: 'also trust this PEM CA certificate (repeatable)', repeatable: true },
  {
    flags: '--stall-timeout <duration>',
    description: 'abort a request that sends nothing this long (default 30s)',
    parse: durationArg,
  },
  {
    flags: '--retries <n>',
    description: 'attempts per chunk, the first included (default 6)',
    parse: integerIn(1, 100),
  },
  {
    flags: '--retry-base-delay <duration>',
    description: 'first backoff ceiling, doubling per attempt (default 1s)',
    parse: durationArg,
  },
  {
    flags: '--max-retry-after <duration>',
    description: 'fail rather than wait a longer Retry-After (default 2m)',
    parse: durationArg,
  },
  { flags: '--no-fsync', description: 'skip the flush to disk before the rename (faster, not crash-safe)' },
  { flags: '--no-cache', description: 'download straight to --out, bypassing the node cache' },
  {
    flags: '--cache-dir <dir>',
    description: 'cache root (default: $LOOM_CACHE_DIR, $XDG_CACHE_HOME/loom, ~/.cache/loom)',
  },
  {
    flags: '--offline',
    description: 'use a cached copy without asking the origin whether it changed (also LOOM_OFFLINE=1)',
  },
  { flags: '-q, --quiet', description: 'print nothing but errors' },
  { flags: '--json', description: 'print one JSON summary on stdout' },
  {
    flags: '--serve',
    description:
      "after the download, keep running and serve the registry in this process (the original tool's mode; prefer loom control-plane)",
  },
  { flags: '--listen <host:port>', description: 'address for --serve', defaultValue: '127.0.0.1:7070' },
];

/** `Key: Value` -> [key, value]. */
export function parseHeader(line: string): [string, string] {
  const at = line.indexOf(':');
  if (at <= 0) throw new UsageError(`header "${line}" is not of the form "Name: value"`);
  return [line.slice(0, at).trim(), line.slice(at + 1).trim()];
}

/** The output file name the original tool derived from a URL. */
export function defaultOutFor(url: string): string {
  let name = '';
  try {
    name = decodeURIComponent(basename(new URL(url).pathname));
  } catch {
    /* the URL is checked, with a better message, by fetchFile */
  }
  if (!name || name === '/' || name === '.' || name === '..') {
    throw new UsageError(`cannot take a file name from ${url}`, { hint: 'give the output path with -o PATH' });
  }
  return name;
}

/** --out as given; a directory (existing, or written with a trailing slash) gets the URL's file name. */
export function resolveOut(out: string | undefined, url: string): string {
  if (out === undefined) return defaultOutFor(url);
  const isDirectory = out.endsWith('/') || (existsSync(out) && statSync(out).isDirectory());
  return isDirectory ? join(out, defaultOutFor(url)) : out;
}

/** The URL of a fetch: the argument or --url, not two different ones. */
export function urlOf(urlArg: string | undefined, flags: FetchFlags): string {
  const url = urlArg ?? flags.url;
  if (!url) throw new UsageError('no URL given', { hint: 'run loom fetch <url> -o <path>' });
  if (urlArg && flags.url && urlArg !== flags.url)
    throw new UsageError('two different URLs given (argument and --url)');
  return url;
}

export function fetchOptionsFrom(flags: FetchFlags, signal?: AbortSignal): FetchOptions {
  return {
    workers: flags.workers,
    chunkSize: flags.chunkSize,
    maxRequestSize: flags.maxRequestSize,
    sha256: flags.sha256,
    headers: Object.fromEntries(flags.header.map(parseHeader)),
    caCertFiles: flags.caCert,
    stallTimeout: flags.stallTimeout,
    retryAttempts: flags.retries,
    retryBaseDelay: flags.retryBaseDelay,
    maxRetryAfter: flags.maxRetryAfter,
    fsync: flags.fsync,
    signal,
  };
}
