// The flags of `loom fetch`, defined once: the full command line (commander) and the fast
// parser (node:util parseArgs) are both built from this table, so they accept the same
// spellings and check values with the same parsers. Also what the flags turn into: the URL,
// the output path and the fetch options.
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { DEFAULTS, shownDefault } from '../core/defaults.js';
import { InvalidUrlError, UsageError } from '../core/errors.js';
import { DURATION_TOO_LONG, parseDuration, parseSize } from '../core/units.js';
import { checkHeaderText } from '../core/validate.js';
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
  listen?: string;
  advertise?: string;
  legacyTtl?: number;
  progress: ProgressMode;
  controlPlane?: string;
  nodeId?: string;
  zone?: string;
  origin: boolean;
  tokenFile?: string;
  peerTokenFile?: string;
}

/** How progress is shown: `auto` is a bar on a terminal, plain lines otherwise. */
export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';
const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'bar', 'lines', 'none'];

/** The original tool's registry port; `loom control-plane` keeps its own default. */
export const SERVE_LISTEN_DEFAULT = DEFAULTS.serveListen;

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

export function integerIn(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) {
      throw new UsageError(`must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

/** The engine's smallest chunk and request: checked here so the message names the flag. */
const MIN_REQUEST = 64 * 1024;

function sizeArg(value: string): number {
  let bytes: number;
  try {
    bytes = parseSize(value);
  } catch {
    throw new UsageError('must be a size such as 10MiB, 64M or 1048576');
  }
  if (bytes < MIN_REQUEST) throw new UsageError('must be at least 64KiB');
  return bytes;
}

function durationArg(positive: boolean) {
  return (value: string): number => {
    let ms: number;
    try {
      ms = parseDuration(value);
    } catch (err) {
      if (err instanceof UsageError && err.message.endsWith(DURATION_TOO_LONG)) throw new UsageError(DURATION_TOO_LONG);
      throw new UsageError('must be a duration such as 30 (seconds), 500ms, 30s or 2m');
    }
    if (positive && ms < 1) throw new UsageError('must be longer than 0');
    return ms;
  };
}

function httpUrlArg(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError('must be a URL such as http://10.0.0.5:3000');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError('must be an http or https URL');
  return value.replace(/\/+$/, '');
}

/** A header line, checked here so its message names -H: a name HTTP allows, a value on one line. */
function headerArg(value: string): string {
  const at = value.indexOf(':');
  if (at <= 0) throw new UsageError('must be of the form "Name: value"');
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(value.slice(0, at).trim()))
    throw new UsageError("the header name may hold only letters, digits and !#$%&'*+.^_`|~-");
  if (/[\r\n]/.test(value)) throw new UsageError('must be on one line');
  checkHeaderText(value.slice(at + 1).trim(), 'the header value', { allowTab: true });
  return value;
}

/**
 * A CA file is read only for an https URL; one that cannot be read is said at once, whatever
 * the scheme, not accepted silently (an http URL) and found out on the day the URL is https.
 */
export function checkCaCertFiles(files: readonly string[]): void {
  for (const file of files) {
    try {
      if (!statSync(file).isFile()) throw new Error('not a file');
      accessSync(file, constants.R_OK);
    } catch (err) {
      const code = (err as { code?: string }).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
      throw new UsageError(`cannot read --ca-cert ${file}: ${why}`, { hint: 'give a readable PEM file' });
    }
  }
}

function progressArg(value: string): ProgressMode {
  const mode = PROGRESS_MODES.find((m) => m === value);
  if (!mode) throw new UsageError(`must be one of ${PROGRESS_MODES.join(', ')}`);
  return mode;
}

export const FETCH_FLAGS: readonly FlagSpec[] = [
  {
    flags: '-o, --out <path>',
    description: 'output file (default: the file name in the URL); - writes it to stdout, in order',
  },
  { flags: '--url <url>', description: 'the URL (the original tool spelled it so; same as the argument)' },
  {
    flags: '-w, --workers <n>',
    description: `requests in flight, 1-${DEFAULTS.maxWorkers}`,
    parse: integerIn(1, DEFAULTS.maxWorkers),
    defaultValue: DEFAULTS.workers,
  },
  {
    flags: '--chunk-size <size>',
    description: `planning and split unit (default: ${shownDefault('chunkSize', DEFAULTS.chunkSize)})`,
    parse: sizeArg,
  },
  {
    flags: '--max-request-size <size>',
    description: 'largest single request (default: one chunk)',
    parse: sizeArg,
  },
  {
    flags: '--sha256 <hex>',
    description:
      'expected sha256 of the file; a mismatch fails with nothing at the output (the node cache keeps what the origin sent, unless the Hub gave another digest)',
  },
  {
    flags: '-H, --header <line>',
    description: "extra request header 'Name: value' (repeatable)",
    parse: headerArg,
    repeatable: true,
  },
  { flags: '--ca-cert <file>', description: 'also trust this PEM CA certificate (repeatable)', repeatable: true },
  {
    flags: '--stall-timeout <duration>',
    description: `abort a request that sends nothing this long; a bare number is seconds (default: ${shownDefault('stallTimeoutMs', DEFAULTS.stallTimeoutMs)})`,
    parse: durationArg(true),
  },
  {
    flags: '--retries <n>',
    description: `attempts per range, the first included (default: ${DEFAULTS.retry.attempts})`,
    parse: integerIn(1, 100),
  },
  {
    flags: '--retry-base-delay <duration>',
    description: `first backoff ceiling, doubling per attempt; a bare number is seconds (default: ${shownDefault('baseDelayMs', DEFAULTS.retry.baseDelayMs)})`,
    parse: durationArg(false),
  },
  {
    flags: '--max-retry-after <duration>',
    description: `fail rather than wait a longer Retry-After; a bare number is seconds (default: ${shownDefault('maxRetryAfterMs', DEFAULTS.retry.maxRetryAfterMs)})`,
    parse: durationArg(false),
  },
  { flags: '--no-fsync', description: 'skip the flush to disk before the rename (faster, not crash-safe)' },
  { flags: '--no-cache', description: 'download straight to --out, bypassing the node cache' },
  {
    flags: '--cache-dir <dir>',
    description: 'cache root (default: $LOOM_CACHE_DIR, $XDG_CACHE_HOME/loom, ~/.cache/loom)',
  },
  {
    flags: '--offline',
    description:
      'use a cached copy without asking the origin whether it changed (also LOOM_OFFLINE=1, true, yes or on)',
  },
  { flags: '-q, --quiet', description: 'print nothing but errors' },
  {
    flags: '--progress <mode>',
    description: `auto (a bar on a terminal, else a line every ${shownDefault('progressLineIntervalMs', DEFAULTS.progressLineIntervalMs)} or 10%), bar, lines or none`,
    parse: progressArg,
    defaultValue: 'auto',
  },
  { flags: '--json', description: 'print one JSON summary on stdout' },
  {
    flags: '--serve',
    description:
      "serve the registry in this process: bound before the download (503 until it is done), then serving until Ctrl-C (the original tool's mode; prefer loom control-plane)",
  },
  {
    flags: '--control-plane <url>',
    description: 'take the bytes from peers first, found through this control plane (also $LOOM_CONTROL_PLANE)',
  },
  {
    flags: '--node-id <id>',
    description: "this node's id, as its agent registers it (default: $LOOM_NODE_ID, else the host name)",
  },
  { flags: '--zone <zone>', description: "this node's zone: peers in it are preferred" },
  { flags: '--no-origin', description: 'peers only: fail clearly when no peer can serve the file' },
  { flags: '--token-file <file>', description: 'bearer token for the control plane (also $LOOM_TOKEN)' },
  { flags: '--peer-token-file <file>', description: "bearer token peers' agents ask for (also $LOOM_PEER_TOKEN)" },
  {
    flags: '--listen <host:port>',
    description: `address for --serve (default: ${SERVE_LISTEN_DEFAULT}, the original tool's, or $LOOM_SERVE_LISTEN)`,
  },
  {
    flags: '--advertise <url>',
    description:
      'with --serve: the URL other nodes reach this node at, as it registers itself (default: the --listen address; with a wildcard listen, the host name and a warning)',
    parse: httpUrlArg,
  },
  {
    flags: '--legacy-ttl <duration>',
    description:
      'with --serve: /register registrations expire after this long unless repeated (default: never, the life of the process, as in the original tool)',
    parse: durationArg(true),
  },
];

/** `Key: Value` -> [key, value]. */
export function parseHeader(line: string): [string, string] {
  const at = line.indexOf(':');
  if (at <= 0) throw new UsageError(`header "${line}" is not of the form "Name: value"`);
  return [line.slice(0, at).trim(), line.slice(at + 1).trim()];
}

/**
 * The output file name the original tool derived from a URL: the last segment of its path,
 * decoded. Only ever a plain name in the output folder: an encoded separator (`%2F`, `%5C`)
 * cannot make it a path, so `x%2F..%2F..%2Fevil` is `evil`, never `../../evil`.
 */
export function defaultOutFor(url: string): string {
  let name = '';
  try {
    const segments = new URL(url).pathname.split('/').filter(Boolean);
    const decoded = decodeURIComponent(segments[segments.length - 1] ?? '');
    name = decoded.split(/[/\\]/).pop() ?? '';
  } catch {
    /* the URL is checked, with a better message, by fetchFile */
  }
  // eslint-disable-next-line no-control-regex
  if (!name || name === '.' || name === '..' || /[\u0000-\u001f\u007f]/.test(name)) {
    throw new UsageError(`cannot take a file name from ${url}`, { hint: 'give the output path with -o PATH' });
  }
  return name;
}

/** --out as given; a directory (existing, or written with a trailing slash) gets the URL's file name. */
export function resolveOut(out: string | undefined, url: string): string {
  if (out === undefined) return defaultOutFor(url);
  const isDirectory = out.endsWith('/') || (existsSync(out) && statSync(out).isDirectory());
  // Not join(): it would drop `a/..` that the kernel resolves (see run-fetch checkOutputFolder).
  return isDirectory ? `${out.replace(/\/+$/, '')}/${defaultOutFor(url)}` : out;
}

/** The schemes `loom fetch` takes, as its messages list them. */
const CLI_SCHEMES = ['http', 'https', 'hf', 's3'];

/** The URL of a fetch: the argument or --url, not two different ones, of a scheme Loom fetches. */
export function urlOf(urlArg: string | undefined, flags: FetchFlags): string {
  const url = urlArg ?? flags.url;
  if (!url) throw new UsageError('no URL given', { hint: 'run loom fetch <url> -o <path>' });
  if (urlArg && flags.url && urlArg !== flags.url)
    throw new UsageError('two different URLs given (argument and --url)');
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined)
    throw new InvalidUrlError(`"${url}" is not a URL`, {
      hint: `give it with its scheme, e.g. https://${url}`,
    });
  if (!CLI_SCHEMES.includes(scheme))
    throw new InvalidUrlError(`unsupported URL scheme "${scheme}:" in ${url}`, {
      hint: `loom fetches ${CLI_SCHEMES.map((s) => `${s}://`).join(', ')} URLs`,
    });
  // s3://bucket (or a prefix/) names no object: said now, not as a credentials error later.
  if (scheme === 's3' && /^s3:\/\/[^/]*\/?$|\/$/i.test(url))
    throw new InvalidUrlError(`${url} names no object: the key is missing`, {
      hint: 'write s3://bucket/key; a whole prefix is pulled with loom pull s3://bucket/prefix/ --out DIR',
    });
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
