// `loom fetch`: one URL to one file, a thin layer over fetchFile. It also accepts the
// original tool's spelling (`--url URL --out PATH`), with --out defaulting to the URL's
// file name.
import { existsSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULTS } from '../core/defaults.js';
import { EXIT, UsageError } from '../core/errors.js';
import { formatBytes, parseDuration, parseSize } from '../core/units.js';
import { fetchCached, type CachedFetchResult } from '../cache/cached-fetch.js';
import { fetchFile, type FetchResult } from '../fetch/fetch-file.js';
import type { FetchOptions } from '../fetch/options.js';
import { printJson, reportError, say, type OutputFlags } from './output.js';
import { createProgressView, wantsProgressBar } from './progress.js';
import { onInterrupt } from './signals.js';

interface FetchFlags extends OutputFlags {
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
  serve?: boolean;
  listen: string;
}

function integerIn(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

function sizeArg(value: string): number {
  try {
    return parseSize(value);
  } catch {
    throw new InvalidArgumentError('must be a size such as 10MiB, 64M or 1048576');
  }
}

function durationArg(value: string): number {
  try {
    return parseDuration(value);
  } catch {
    throw new InvalidArgumentError('must be a duration such as 500ms, 30s or 2m');
  }
}

function collectArg(value: string, previous: string[]): string[] {
  return [...previous, value];
}

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

export function addFetchOptions(command: Command): Command {
  return command
    .option('-o, --out <path>', 'output file (default: the file name in the URL)')
    .option('--url <url>', 'the URL (the original tool spelled it so; same as the argument)')
    .option(
      '-w, --workers <n>',
      `requests in flight, 1-${DEFAULTS.maxWorkers}`,
      integerIn(1, DEFAULTS.maxWorkers),
      DEFAULTS.workers,
    )
    .option('--chunk-size <size>', 'planning and split unit (default 10MiB)', sizeArg)
    .option(
      '--max-request-size <size>',
      'largest single request (default: the file split evenly over the workers)',
      sizeArg,
    )
    .option('--sha256 <hex>', 'expected sha256 of the file; a mismatch keeps nothing')
    .option('-H, --header <line>', "extra request header 'Name: value' (repeatable)", collectArg, [])
    .option('--ca-cert <file>', 'also trust this PEM CA certificate (repeatable)', collectArg, [])
    .option('--stall-timeout <duration>', 'abort a request that sends nothing this long (default 30s)', durationArg)
    .option('--retries <n>', 'attempts per chunk, the first included (default 6)', integerIn(1, 100))
    .option('--retry-base-delay <duration>', 'first backoff ceiling, doubling per attempt (default 1s)', durationArg)
    .option('--max-retry-after <duration>', 'fail rather than wait a longer Retry-After (default 2m)', durationArg)
    .addOption(new Option('--no-fsync', 'skip the flush to disk before the rename (faster, not crash-safe)'))
    .option('--no-cache', 'download straight to --out, bypassing the node cache')
    .option('--cache-dir <dir>', 'cache root (default: $LOOM_CACHE_DIR, $XDG_CACHE_HOME/loom, ~/.cache/loom)')
    .option('--offline', 'use a cached copy without asking the origin whether it changed (also LOOM_OFFLINE=1)')
    .option('-q, --quiet', 'print nothing but errors')
    .option('--json', 'print one JSON summary on stdout')
    .option(
      '--serve',
      "after the download, keep running and serve the registry in this process (the original tool's mode; prefer loom control-plane)",
    )
    .option('--listen <host:port>', 'address for --serve', '127.0.0.1:7070');
}

export function fetchOptionsFrom(flags: FetchFlags, signal: AbortSignal): FetchOptions {
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

export function summaryOf(result: FetchResult | CachedFetchResult): Record<string, unknown> {
  const cache = 'cache' in result ? result : undefined;
  return {
    ok: true,
    cache: cache?.cache ?? 'off',
    materialization: cache?.materialization ?? null,
    waitedForOtherProcess: cache?.waited ?? false,
    url: result.url,
    path: result.path,
    bytes: result.size,
    seconds: Number(result.seconds.toFixed(3)),
    mbPerSecond: Number((result.stats.transferredBytes / 1e6 / Math.max(result.seconds, 1e-6)).toFixed(1)),
    sha256: result.sha256 ?? null,
    requests: result.stats.requests,
    retries: result.stats.retries,
    splits: result.stats.splits,
    restarts: result.stats.restarts,
    transferredBytes: result.stats.transferredBytes,
    resumedBytes: result.stats.resumedBytes,
  };
}

export function fetchCommand(): Command {
  const command = new Command('fetch')
    .description('download one URL to a file with parallel ranged requests')
    .argument('[url]', 'http(s) URL to fetch');
  addFetchOptions(command);
  command.action(async (urlArg: string | undefined, flags: FetchFlags) => {
    process.exitCode = await runFetch(urlArg, flags);
  });
  return command;
}

async function runFetch(urlArg: string | undefined, flags: FetchFlags): Promise<number> {
  const interrupt = onInterrupt();
  try {
    const url = urlArg ?? flags.url;
    if (!url) throw new UsageError('no URL given', { hint: 'run loom fetch <url> -o <path>' });
    if (urlArg && flags.url && urlArg !== flags.url)
      throw new UsageError('two different URLs given (argument and --url)');
    const out = resolveOut(flags.out, url);
    const view = createProgressView(basename(out), wantsProgressBar(flags));
    const options = fetchOptionsFrom(flags, interrupt.signal);
    options.onProgress = (p) => view.update(p);
    let result: FetchResult | CachedFetchResult;
    try {
      result = flags.cache
        ? await fetchCached(url, out, {
            ...options,
            cacheDir: flags.cacheDir,
            offline: flags.offline,
            onStatus: (message) => (wantsProgressBar(flags) ? view.status(message) : say(flags, `loom: ${message}`)),
          })
        : await fetchFile(url, out, options);
    } finally {
      view.stop();
    }
    if (flags.json) printJson(summaryOf(result));
    else {
      const rate = result.stats.transferredBytes / 1e6 / Math.max(result.seconds, 1e-6);
      const cached = 'cache' in result ? (result as CachedFetchResult) : undefined;
      const how = cached?.cache === 'hit' ? `cache hit, ${cached.materialization}` : `${rate.toFixed(0)} MB/s`;
      say(flags, `loom: ${out}: ${formatBytes(result.size)} in ${result.seconds.toFixed(2)} s (${how})`);
    }
    if (flags.serve) await serveRegistry(flags, out, interrupt.signal);
    return EXIT.ok;
  } catch (err) {
    return reportError(err, flags);
  } finally {
    interrupt.dispose();
  }
}

/**
 * The original tool's --serve: the registry runs inside this process (in memory, gone when
 * it exits) with this node registered as holding the file, until Ctrl-C or SIGTERM.
 */
async function serveRegistry(flags: FetchFlags, out: string, signal: AbortSignal): Promise<void> {
  const [{ parseListen }, { SqliteStore }, { buildControlPlane }] = await Promise.all([
    import('./control-plane-command.js'),
    import('../control-plane/sqlite-store.js'),
    import('../control-plane/server.js'),
  ]);
  const { host, port } = parseListen(flags.listen);
  const store = new SqliteStore(':memory:');
  const app = await buildControlPlane({ store, nodeTtlMs: 365 * 24 * 3600_000 });
  const address = await app.listen({ host, port });
  await app.inject({ method: 'POST', url: '/register', payload: { node: address, model: basename(out) } });
  say(flags, `loom: serving the registry on ${address} (in-process; loom control-plane is the durable service)`);
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener('abort', () => resolve(), { once: true });
  });
  await app.close();
  await store.close();
}
