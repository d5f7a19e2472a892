// Runs `loom fetch` once its flags are parsed (by commander or by the fast parser): the checks
// that can fail before any byte is fetched (the output folder, the --serve port), then the
// download or cache hit with its progress, the summary line and the exit code.
import { constants } from 'node:fs';
import { access, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { AbortedError, cancelled, diskError, DiskFullError, EXIT, UsageError } from '../core/errors.js';
import { formatBytes } from '../core/units.js';
import { fetchCached, type CachedFetchResult } from '../cache/cached-fetch.js';
import { resolveCacheRoot } from '../cache/cache-root.js';
import { createCacheRoot, createFolders, removeFolders } from './cache-root-check.js';
import type { FetchResult } from '../fetch/fetch-file.js';
import { withoutResume } from '../fetch/retry-budget.js';
import type { FetchOptions } from '../fetch/options.js';
import type { PeerPlanner } from '../peer/peer-download.js';
import {
  checkCaCertFiles,
  defaultOutFor,
  fetchOptionsFrom,
  resolveOut,
  urlOf,
  type FetchFlags,
} from './fetch-flags.js';
import { summaryLine, summaryOf } from './fetch-summary.js';
import { printJson, reportError, say } from './output.js';
import { holdYoungGenerationAfter } from './process-memory.js';
import { createProgressView, resolveProgressMode } from './progress.js';
import type { ServedRegistry } from './serve-registry.js';
import { onInterrupt } from './signals.js';
import { StdoutStream } from './stdout-stream.js';

const NO_RANGES = 'this server does not support ranges: one stream, no resume';

/** The library's option names in its messages, as the flags a CLI user typed. */
const FLAG_OF_OPTION: Record<string, string> = {
  workers: '--workers',
  chunkSize: '--chunk-size',
  maxRequestSize: '--max-request-size',
  sha256: '--sha256',
  headers: '--header',
  caCertFiles: '--ca-cert',
  stallTimeout: '--stall-timeout',
  retryAttempts: '--retries',
  retryBaseDelay: '--retry-base-delay',
  maxRetryAfter: '--max-retry-after',
};

/** A library error, reworded for the command line: the flag's name, not the option's. */
function forCommandLine(err: unknown): unknown {
  if (!(err instanceof UsageError)) return err;
  const message = err.message.replace(/^invalid option (\w+)/, (all, name: string) =>
    FLAG_OF_OPTION[name] ? `invalid ${FLAG_OF_OPTION[name]}` : all,
  );
  if (message === err.message) return err;
  Object.defineProperty(err, 'message', { value: message });
  return err;
}

/**
 * The folder --out goes into is made if missing (as aria2c, `hf download` and curl
 * --create-dirs do: `-o models/llama/model.gguf` in a fresh container) and must be writable:
 * found out now, not after the download. The path is taken as written, not normalized, as
 * the kernel (and curl --create-dirs) read it: `-o a/../b/x.bin` makes `a` and `b` (a `..`
 * after a symbolic link leads to the link target's parent, not back to where it started).
 * Returns the folders it made, for a failed fetch to remove.
 */
async function checkOutputFolder(out: string): Promise<string[]> {
  const folder = dirname(out);
  let created: string[];
  try {
    created = await createFolders(folder);
  } catch (err) {
    const dir = (err as { dir?: string }).dir ?? folder;
    throw diskError(err, `creating the output folder ${absolute(dir)}`, dir);
  }
  try {
    const info = await stat(folder);
    if (!info.isDirectory()) throw Object.assign(new Error(`${folder} is not a directory`), { code: 'ENOTDIR' });
    await access(folder, constants.W_OK);
  } catch (err) {
    await removeFolders(created);
    throw diskError(err, `checking the output folder ${absolute(folder)}`, folder);
  }
  return created;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** `path` from the root, its `..` kept (resolve() would drop them). */
function absolute(path: string): string {
  return isAbsolute(path) ? path : `${process.cwd()}/${path}`;
}

/**
 * Makes the cache root if it is missing, folder by folder (see cache-root-check.ts: a
 * recursive mkdir never returns under /proc). A root that cannot be made means no cache.
 */
async function cacheUsable(flags: FetchFlags, out: string): Promise<boolean> {
  try {
    await createCacheRoot(resolveCacheRoot(flags.cacheDir));
    return true;
  } catch (err) {
    warning(flags, `cache unusable (${(err as Error).message}); downloading straight to ${out}`);
    return false;
  }
}

/**
 * A line for what succeeded the wrong way (the cache or the fleet bypassed): said with --json
 * too, where status lines are not, since the exit code cannot show it; -q silences it.
 */
function warning(flags: FetchFlags, message: string): void {
  if (!flags.quiet) process.stderr.write(`loom: warning: ${message}\n`);
}

/**
 * With a control plane (--control-plane or LOOM_CONTROL_PLANE), the fetch takes its bytes
 * from peers first. Loaded only then: a plain fetch or a cache hit never pays for it.
 */
async function peerPlanner(
  flags: FetchFlags,
  onStatus: (message: string) => void,
  onWarning: (message: string) => void,
  env: NodeJS.ProcessEnv = process.env,
): Promise<PeerPlanner | undefined> {
  const controlPlane = flags.controlPlane ?? env.LOOM_CONTROL_PLANE;
  if (!controlPlane) {
    if (flags.origin === false)
      throw new UsageError('--no-origin needs a control plane to find peers', {
        hint: 'give --control-plane URL (or set LOOM_CONTROL_PLANE)',
      });
    return undefined;
  }
  const [{ PeerPlanner }, { tokenFrom }] = await Promise.all([
    import('../peer/peer-download.js'),
    import('./agent-command.js'),
  ]);
  return new PeerPlanner({
    controlPlane,
    controlPlaneFrom: flags.controlPlane === undefined ? 'LOOM_CONTROL_PLANE' : '--control-plane',
    token: tokenFrom(flags.tokenFile, 'LOOM_TOKEN', env),
    agentToken: tokenFrom(flags.peerTokenFile, 'LOOM_PEER_TOKEN', env),
    nodeId: flags.nodeId,
    zone: flags.zone,
    useOrigin: flags.origin !== false,
    originConnections: flags.workers,
    onStatus,
    onWarning,
  });
}

/** An S3 object through fetchS3, shaped as a fetch result (`url`), with `s3Check` kept for --json. */
async function fetchS3ForCli(uri: string, out: string, options: FetchOptions): Promise<FetchResult> {
  const { fetchS3 } = await import('./s3-fetch.js');
  const { uri: url, ...rest } = await fetchS3(uri, out, options);
  return { ...rest, url };
}

/** The name the progress shows for `-o -`: the URL's file name, else "stdout". */
function streamLabel(url: string): string {
  try {
    return defaultOutFor(url);
  } catch {
    return 'stdout';
  }
}

/** `-o -` goes with neither --json (stdout is the file) nor --serve (no file to register). */
function checkStdoutFlags(flags: FetchFlags): void {
  if (flags.json)
    throw new UsageError('--json and -o - both write to stdout', {
      hint: 'drop --json: the summary line goes to stderr',
    });
  if (flags.serve)
    throw new UsageError('--serve registers the downloaded file, and -o - keeps none', { hint: 'give -o PATH' });
}

export async function runFetch(urlArg: string | undefined, flags: FetchFlags): Promise<number> {
  const interrupt = onInterrupt();
  let registry: ServedRegistry | undefined;
  let stream: StdoutStream | undefined;
  let streamDir: string | undefined;
  // The output folders this run made: a failed fetch removes those left empty.
  let createdFolders: string[] = [];
  try {
    const url = urlOf(urlArg, flags);
    if (!flags.serve && (flags.advertise !== undefined || flags.legacyTtl !== undefined))
      throw new UsageError(`${flags.advertise !== undefined ? '--advertise' : '--legacy-ttl'} goes with --serve`, {
        hint: 'add --serve, or drop it',
      });
    // `-o "$MODEL_PATH"` with the variable unset: said now, not after the whole download.
    if (flags.out === '')
      throw new UsageError('--out is empty', { hint: "give -o a file path, or leave it out for the URL's file name" });
    checkCaCertFiles(flags.caCert);
    const toStdout = flags.out === '-';
    // An empty --cache-dir or LOOM_CACHE_DIR is a mistake to say (exit 2), as for `loom cache`,
    // not a cache to do without: a fetch would succeed with no cache and no peers.
    if (!toStdout && flags.cache) resolveCacheRoot(flags.cacheDir);
    let out: string;
    if (toStdout) {
      checkStdoutFlags(flags);
      // Ranges arrive out of order: the file is assembled in a temporary folder and sent from there.
      try {
        streamDir = await mkdtemp(join(tmpdir(), 'loom-stdout-'));
      } catch (err) {
        throw diskError(err, `creating a temporary folder in ${tmpdir()} for -o -`, tmpdir());
      }
      out = join(streamDir, 'file');
      const { partPathFor } = await import('../fetch/fetch-file.js');
      stream = new StdoutStream(partPathFor(out));
    } else {
      out = resolveOut(flags.out, url);
      createdFolders = await checkOutputFolder(out);
    }
    const useCache = !toStdout && flags.cache && (await cacheUsable(flags, out));
    if (flags.serve) {
      const { startRegistry } = await import('./serve-registry.js');
      registry = await startRegistry({
        listen: flags.listen,
        advertise: flags.advertise,
        legacyTtlMs: flags.legacyTtl,
      });
      say(flags, `loom: registry bound to ${registry.address}; it serves once the download is done`);
      if (registry.warning) warning(flags, registry.warning);
    }
    const mode = resolveProgressMode(flags);
    const view = createProgressView(toStdout ? streamLabel(url) : basename(out), mode);
    interrupt.beforeMessage = () => view.clear();
    const signal = stream ? AbortSignal.any([interrupt.signal, stream.signal]) : interrupt.signal;
    const options = fetchOptionsFrom(flags, signal);
    // Without --sha256 the summary still names the digest of what went to stdout.
    if (toStdout && !url.startsWith('s3://')) options.computeSha256 = true;
    let toldNoRanges = false;
    options.onProgress = (p) => {
      if (!p.resumable && !toldNoRanges) {
        toldNoRanges = true;
        if (mode === 'none') say(flags, `loom: ${NO_RANGES}`);
        else view.note(NO_RANGES);
      }
      stream?.onProgress(p);
      view.update(p);
      holdYoungGenerationAfter(p.transferredBytes);
    };
    let result: FetchResult | CachedFetchResult;
    let planner: PeerPlanner | undefined;
    try {
      const onStatus = (message: string): void =>
        mode === 'none' ? say(flags, `loom: ${message}`) : view.status(message);
      // A control plane that cannot be used (a refused token) is said with --json too: the
      // fetch succeeds from the origin, and nothing else would show the fleet was bypassed.
      const onWarning = (message: string): void => {
        if (mode === 'none') warning(flags, message);
        else view.note(`warning: ${message}`);
      };
      if (useCache && !url.startsWith('s3://') && !url.startsWith('hf://'))
        planner = await peerPlanner(flags, onStatus, onWarning);
      const fetchOnce = async (): Promise<FetchResult | CachedFetchResult> =>
        url.startsWith('s3://')
          ? // s3:// (S3 and compatible stores): signed ranged GETs, checked against the object's checksum.
            await fetchS3ForCli(url, out, options)
          : url.startsWith('hf://')
            ? // hf:// (the Hub): resolved to its commit, fetched and verified by src/hub/fetch-hf-file.ts.
              await (
                await import('../hub/fetch-hf-file.js')
              ).fetchHfFile(url, out, { ...options, cache: useCache, cacheDir: flags.cacheDir, onStatus })
            : useCache
              ? await fetchCached(url, out, {
                  ...options,
                  cacheDir: flags.cacheDir,
                  offline: flags.offline,
                  onStatus,
                  onWarning,
                  planner,
                })
              : await (await import('../fetch/fetch-file.js')).fetchFile(url, out, options);
      result = await fetchOnce().catch(async (err: unknown) => {
        // The output folder was there when checked and is gone: another `loom fetch` made it
        // and, failing, removed it as empty before this run wrote into it (parallel fetches
        // into one new folder). Made again and fetched once more: the bytes already in the
        // cache or in a kept part are not had again.
        if (stream || signal.aborted || (await exists(dirname(out)))) throw err;
        createdFolders = [...createdFolders, ...(await checkOutputFolder(out))];
        onStatus(`the output folder ${absolute(dirname(out))} was removed meanwhile; made again`);
        return fetchOnce();
      });
      if (stream) {
        await stream.finish(result.path, result.size);
        result = { ...result, path: '-' };
      }
    } finally {
      view.stop();
    }
    if (flags.json)
      printJson({ ...summaryOf(result), ...(planner?.problem && { controlPlaneError: planner.problem }) });
    else say(flags, summaryLine(result, flags.sha256));
    if (registry) {
      await registry.register(out);
      say(
        flags,
        `loom: serving the registry on ${registry.address} until Ctrl-C, this node registered as ${registry.advertised} (in this process, in memory; loom control-plane is the durable service)`,
      );
      await new Promise<void>((done) => {
        if (interrupt.signal.aborted) done();
        interrupt.signal.addEventListener('abort', () => done(), { once: true });
      });
    }
    return EXIT.ok;
  } catch (err) {
    await stream?.close();
    // Only empty ones: a part and journal kept for a rerun keep their folder.
    await removeFolders(createdFolders);
    const code = reportError(forCommandLine(stream ? streamFailure(err, stream, streamDir) : err), flags);
    if (stream && stream.sent > 0)
      process.stderr.write(`loom: stdout got ${formatBytes(stream.sent)} of the file and is incomplete\n`);
    return code;
  } finally {
    await stream?.close();
    if (streamDir) await rm(streamDir, { recursive: true, force: true });
    await registry?.close();
    interrupt.dispose();
  }
}

const STREAM_KEEPS_NOTHING = '-o - keeps nothing to resume from: a rerun starts over';

/** Why a `-o -` fetch failed: the copy's own failure, and a cancel that keeps nothing. */
function streamFailure(err: unknown, stream: StdoutStream, streamDir: string | undefined): unknown {
  if (stream.failure) return stream.failure;
  if (err instanceof AbortedError) return cancelled(STREAM_KEEPS_NOTHING);
  // The file is assembled in $TMPDIR, not at an --out the user chose, and is not kept.
  if (err instanceof DiskFullError && streamDir && err.path?.startsWith(streamDir)) {
    return new DiskFullError(err.message.slice(0, err.hint ? -`; ${err.hint}`.length : undefined), {
      path: err.path,
      cause: err,
      hint: `-o - assembles the file in ${dirname(streamDir)} first: free space there or set TMPDIR to a folder with room`,
    });
  }
  return withoutResume(err, STREAM_KEEPS_NOTHING);
}
