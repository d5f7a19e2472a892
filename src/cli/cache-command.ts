// `loom cache ls | verify | gc | rm`: look after the node's blob cache.
import { Command } from 'commander';
import { EXIT } from '../core/errors.js';
import { formatBytes, parseSize } from '../core/units.js';
import type { CacheHandle } from '../cache/cache-admin.js';
import { resolveCacheRoot } from '../cache/cache-root.js';
import { printJson, reportError, say, type OutputFlags } from './output.js';

interface CacheFlags extends OutputFlags {
  cacheDir?: string;
}

type Admin = typeof import('../cache/cache-admin.js');

function withCache(
  action: (cache: CacheHandle, flags: CacheFlags, admin: Admin, ...args: string[]) => Promise<number>,
) {
  return async (...args: unknown[]): Promise<void> => {
    const command = args[args.length - 1] as Command;
    const flags = command.optsWithGlobals<CacheFlags>();
    const positional = args.slice(0, -2).filter((a): a is string => typeof a === 'string');
    try {
      const admin = await import('../cache/cache-admin.js');
      const cache = await admin.openCache(resolveCacheRoot(flags.cacheDir));
      try {
        process.exitCode = await action(cache, flags, admin, ...positional);
      } finally {
        cache.close();
      }
    } catch (err) {
      process.exitCode = reportError(err, flags);
    }
  };
}

const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');

export function cacheCommand(): Command {
  const cache = new Command('cache')
    .description("manage the node's content-addressable cache")
    .option('--cache-dir <dir>', 'cache root (default: $LOOM_CACHE_DIR, $XDG_CACHE_HOME/loom, ~/.cache/loom)')
    .option('--json', 'print JSON on stdout')
    .option('-q, --quiet', 'print nothing but errors');

  cache
    .command('ls')
    .description('list cached blobs: digest, size, sources, last use; and the total')
    .action(
      withCache(async (handle, flags, { listCache }) => {
        const listing = listCache(handle);
        if (flags.json) {
          printJson({ ok: true, ...listing });
          return EXIT.ok;
        }
        for (const blob of listing.blobs) {
          const sources = blob.sources.length ? blob.sources.join(', ') : '(no source)';
          process.stdout.write(
            `${blob.digest}  ${formatBytes(blob.size).padStart(10)}  ${iso(blob.lastUsedAt)}  ${sources}\n`,
          );
        }
        process.stdout.write(`${listing.blobs.length} blobs, ${formatBytes(listing.totalBytes)} in ${listing.root}\n`);
        return EXIT.ok;
      }),
    );

  cache
    .command('verify')
    .description('rehash every blob; remove the corrupt ones (exit 4 when any was found)')
    .action(
      withCache(async (handle, flags, { verifyCache }) => {
        const report = await verifyCache(handle);
        if (flags.json) printJson({ ok: report.corrupt.length === 0, ...report });
        else {
          for (const digest of report.corrupt) say(flags, `loom: corrupt blob removed: ${digest}`);
          say(flags, `loom: ${report.checked} blobs checked, ${report.corrupt.length} corrupt`);
        }
        return report.corrupt.length ? EXIT.integrity : EXIT.ok;
      }),
    );

  cache
    .command('gc')
    .description('evict least recently used blobs until the cache is at most --max-size')
    .requiredOption('--max-size <size>', 'size to shrink to, e.g. 200GiB')
    .option('--dry-run', 'say what would be evicted, evict nothing')
    .action(
      withCache(async (handle, flags, { gcCache }) => {
        const opts = flags as CacheFlags & { maxSize: string; dryRun?: boolean };
        const report = await gcCache(handle, parseSize(opts.maxSize, '--max-size'), opts.dryRun ?? false);
        if (flags.json) printJson({ ok: true, ...report });
        else {
          const verb = report.dryRun ? 'would evict' : 'evicted';
          for (const blob of report.evicted) say(flags, `loom: ${verb} ${blob.digest} (${formatBytes(blob.size)})`);
          for (const digest of report.skippedInUse) say(flags, `loom: kept ${digest}: in use`);
          say(
            flags,
            `loom: ${verb} ${report.evicted.length} blobs, ${formatBytes(report.freedBytes)}; ${formatBytes(report.remainingBytes)} remain`,
          );
        }
        return EXIT.ok;
      }),
    );

  cache
    .command('rm')
    .description('remove a blob by digest, or a source (URL) and its blob if nothing else uses it')
    .argument('<digest-or-source>')
    .action(
      withCache(async (handle, flags, { removeFromCache }, target) => {
        const { removed } = await removeFromCache(handle, target!);
        if (flags.json) printJson({ ok: true, removed });
        else for (const item of removed) say(flags, `loom: removed ${item}`);
        return EXIT.ok;
      }),
    );
  return cache;
}
