// `loom pull`: a whole Hugging Face repo at one commit into the standard HF cache (or plain
// files in --out). Prints the snapshot directory on stdout (a script can use it), one line
// per file on stderr, and one JSON document with --json. Commander is not loaded on this
// path: a pull whose flags parse cleanly starts without it (pull-flags.ts).
import { resolveCacheRoot } from '../cache/cache-root.js';
import { EXIT, UsageError } from '../core/errors.js';
import { formatBytes as formatSize, formatRate, formatSeconds, plural } from '../core/units.js';
import { checkCaCertFiles } from './fetch-flags.js';
import { printJson, reportError, say } from './output.js';
import { holdYoungGenerationAfter } from './process-memory.js';
import type { PullFlags } from './pull-flags.js';
import { onInterrupt } from './signals.js';
import type { PullProgress } from '../hub/pull.js';

/** The engine options every file of a pull gets, Hub or S3, from the flags. */
function pullFetchOptions(flags: PullFlags, signal: AbortSignal) {
  return {
    workers: flags.workers,
    caCertFiles: flags.caCert,
    fsync: flags.fsync,
    stallTimeout: flags.stallTimeout,
    retryAttempts: flags.retries,
    retryBaseDelay: flags.retryBaseDelay,
    maxRetryAfter: flags.maxRetryAfter,
    signal,
  };
}

export async function runPull(repo: string, flags: PullFlags): Promise<number> {
  const interrupt = onInterrupt();
  let view: ProgressLine | undefined;
  try {
    if (flags.revision !== undefined && repo.includes('@')) {
      throw new UsageError('the revision is given twice (@revision and --revision)');
    }
    checkCaCertFiles(flags.caCert);
    if (flags.out === '') throw new UsageError('--out is empty', { hint: 'give --out a directory, or leave it out' });
    const line = progressLine(flags);
    view = line;
    if (repo.startsWith('s3://')) return await pullS3(repo, flags, interrupt.signal, line);
    // An empty --cache-dir or LOOM_CACHE_DIR is an error (exit 2), not a pull without the cache.
    resolveCacheRoot(flags.cacheDir);
    const { pullRepo } = await import('../hub/pull.js');
    const result = await pullRepo({
      repo,
      revision: flags.revision,
      repoType: flags.repoType,
      include: flags.include,
      exclude: flags.exclude,
      out: flags.out,
      token: flags.token,
      hubCache: flags.hfCache,
      cacheDir: flags.cacheDir,
      parallelFiles: flags.parallelFiles,
      fetch: pullFetchOptions(flags, interrupt.signal),
      onStatus: (message) => line.line(`loom: ${message}`),
      onFile: (file, { done, total }) => {
        if (!line.live) say(flags, `loom: [${done}/${total}] ${file.path} ${formatSize(file.size)} (${file.outcome})`);
      },
      onProgress: (progress) => {
        line.update(progress);
        holdYoungGenerationAfter(progress.bytesDone);
      },
    });
    line.stop();
    if (flags.json) {
      printJson({ ok: true, ...result });
    } else {
      const fetched = result.files.filter((f) => f.outcome === 'miss').length;
      say(
        flags,
        `loom: ${result.repoType} ${result.repo}@${result.revision} (commit ${result.commit.slice(0, 12)}): ` +
          `${plural(result.files.length, 'file')}, ${formatSize(result.bytes)} in ${formatSeconds(result.seconds)}; ` +
          `${fetched} downloaded (${formatSize(result.transferredBytes)}), ${result.files.length - fetched} already here`,
      );
      process.stdout.write(`${result.dir}\n`);
    }
    return EXIT.ok;
  } catch (err) {
    view?.stop();
    return reportError(err, flags);
  } finally {
    interrupt.dispose();
  }
}

/** `loom pull s3://bucket/prefix/ --out DIR`: every object under the prefix, each checked against S3's checksum. */
async function pullS3(uri: string, flags: PullFlags, signal: AbortSignal, line: ProgressLine): Promise<number> {
  if (!flags.out) {
    throw new UsageError('an s3:// prefix is pulled into a directory', { hint: 'give --out DIR' });
  }
  const { pullS3Prefix } = await import('./s3-fetch.js');
  const started = performance.now();
  const results = await pullS3Prefix(uri, flags.out, pullFetchOptions(flags, signal), {
    parallelFiles: flags.parallelFiles,
    onProgress: (progress) => {
      line.update(progress);
      holdYoungGenerationAfter(progress.bytesDone);
    },
    onFile: (r, { done, total }) => {
      if (!line.live)
        say(flags, `loom: [${done}/${total}] ${r.uri} -> ${r.path} ${formatSize(r.size)} (${r.s3Check.check})`);
    },
  });
  line.stop();
  const bytes = results.reduce((sum, r) => sum + r.size, 0);
  const seconds = (performance.now() - started) / 1000;
  if (flags.json) {
    printJson({
      ok: true,
      uri,
      dir: flags.out,
      bytes,
      seconds: Number(seconds.toFixed(3)),
      files: results.map((r) => ({ uri: r.uri, path: r.path, bytes: r.size, sha256: r.sha256, s3Check: r.s3Check })),
    });
  } else {
    if (line.live) {
      for (const r of results) say(flags, `loom: ${r.uri} -> ${r.path} ${formatSize(r.size)} (${r.s3Check.check})`);
    }
    say(flags, `loom: ${uri}: ${plural(results.length, 'file')}, ${formatSize(bytes)} in ${formatSeconds(seconds)}`);
    process.stdout.write(`${flags.out}\n`);
  }
  return EXIT.ok;
}

interface ProgressLine {
  /** True when the one-line display is drawn (a terminal, not --quiet or --json). */
  live: boolean;
  update(progress: PullProgress): void;
  /** Prints a message above the display. */
  line(message: string): void;
  stop(): void;
}

/**
 * One progress display for the whole pull: on a terminal one line redrawn in place (files
 * and bytes done of the total, rate, and the active files with their percentages); without
 * one (CI, logs) the same line every 5 s, besides the line per finished file.
 */
function progressLine(flags: PullFlags): ProgressLine {
  const quiet = Boolean(flags.quiet || flags.json) || flags.progress === 'none';
  const live = !quiet && (flags.progress === 'bar' || (flags.progress !== 'lines' && Boolean(process.stderr.isTTY)));
  // The rate counts from the first progress the engine gives, not from when the listing
  // began: the listing and a 429's wait are not transfer time.
  let started: number | undefined;
  let startBytes: number | undefined;
  let lastLine = performance.now();
  let drawn = false;
  const clear = (): void => {
    if (drawn) process.stderr.write('\r\x1b[2K');
    drawn = false;
  };
  return {
    live,
    update(p) {
      if (quiet) return;
      const now = performance.now();
      // Files already in place count toward the total, not toward the rate.
      startBytes ??= p.bytesDone;
      started ??= now;
      const seconds = (now - started) / 1000;
      const rate = seconds > 0 ? (p.bytesDone - startBytes) / seconds : 0;
      const files = p.active
        .slice(0, 3)
        .map((a) => `${a.path.split('/').pop()} ${a.size ? Math.floor((a.doneBytes / a.size) * 100) : 100}%`)
        .join(', ');
      const more = p.active.length > 3 ? ` +${p.active.length - 3}` : '';
      const text = `loom: ${p.filesDone}/${p.filesTotal} files, ${formatSize(p.bytesDone)} / ${formatSize(p.bytesTotal)}${rate > 0 ? `, ${formatRate(rate)}` : ''}${files ? ` | ${files}${more}` : ''}`;
      if (!live) {
        if (now - lastLine < 5000) return;
        lastLine = now;
        process.stderr.write(`${text}\n`);
        return;
      }
      clear();
      process.stderr.write(text.slice(0, (process.stderr.columns || 120) - 1));
      drawn = true;
    },
    line(message) {
      clear();
      say(flags, message);
    },
    stop: clear,
  };
}
