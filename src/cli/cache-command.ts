// `loom cache ls | verify | gc | rm`: look after the node's blob cache.
import { Command } from 'commander';
import { EXIT, NotFoundError, UsageError } from '../core/errors.js';
import { formatBytes, parseSize, plural } from '../core/units.js';
import type { CacheHandle } from '../cache/cache-admin.js';
import { resolveCacheRoot } from '../cache/cache-root.js';
import { cacheRootState } from './cache-root-check.js';
import { printJson, reportError, say, type OutputFlags } from './output.js';

interface CacheFlags extends OutputFlags {
  cacheDir?: string;
}

type Admin = typeof import('../cache/cache-admin.js');

/**
 * Runs a cache command on an open cache. A root that does not exist is not created: `missing`
 * answers instead (nothing there), and a root that could not even be created is an error.
 */
function withCache(
  action: (cache: CacheHandle, flags: CacheFlags, admin: Admin, ...args: string[]) => Promise<number>,
  missing: (root: string, flags: CacheFlags) => number,
) {
  return async (...args: unknown[]): Promise<void> => {
    const command = args[args.length - 1] as Command;
    const flags = command.optsWithGlobals<CacheFlags>();
    const positional = args.slice(0, -2).filter((a): a is string => typeof a === 'string');
    try {
      const root = resolveCacheRoot(flags.cacheDir);
      if (!(await cacheRootState(root))) {
        process.exitCode = missing(root, flags);
        return;
      }
      const admin = await import('../cache/cache-admin.js');
      const cache = await admin.openCache(root);
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

/** `loom cache rm` takes an unambiguous digest prefix (at least 4 hex digits), as git does. */
export function resolveDigestPrefix(target: string, digests: readonly string[]): string {
  if (!/^[0-9a-f]+$/i.test(target) || target.length >= 64) return target;
  const prefix = target.toLowerCase();
  if (prefix.length < 4)
    throw new UsageError(`digest prefix ${target} is too short`, { hint: 'give at least 4 hex digits' });
  const matches = digests.filter((d) => d.startsWith(prefix));
  if (matches.length === 0)
    throw new NotFoundError(`no blob in the cache starts with ${prefix}`, { hint: 'see loom cache ls' });
  if (matches.length > 1)
    throw new UsageError(`digest prefix ${prefix} is ambiguous: it matches ${matches.join(', ')}`, {
      hint: 'give more digits',
    });
  return matches[0]!;
}

const nothingCached = (root: string): string =>
  `no cache at ${root} (it does not exist; nothing has been cached there)`;

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
      withCache(
        async (handle, flags, { listCache }) => {
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
          process.stdout.write(
            `${plural(listing.blobs.length, 'blob')}, ${formatBytes(listing.totalBytes)} in ${listing.root}\n`,
          );
          // Bytes no blob row accounts for: said, so that a full disk with "0 blobs" is explained.
          const strays = [
            ...(listing.partialBytes > 0 ? [`${formatBytes(listing.partialBytes)} in partial downloads (tmp/)`] : []),
            ...(listing.unindexedBytes > 0
              ? [`${formatBytes(listing.unindexedBytes)} in blobs the index does not list`]
              : []),
            ...(listing.leftoverBytes > 0 ? [`${formatBytes(listing.leftoverBytes)} in leftovers`] : []),
          ];
          if (strays.length > 0)
            process.stdout.write(
              `of which ${strays.join(' and ')}: loom cache gc removes those no running download owns\n`,
            );
          return EXIT.ok;
        },
        (root, flags) => {
          if (flags.json) printJson({ ok: true, root, exists: false, blobs: [], totalBytes: 0 });
          else process.stdout.write(`${nothingCached(root)}\n`);
          return EXIT.ok;
        },
      ),
    );

  cache
    .command('verify')
    .description('rehash every blob; remove the corrupt ones (exit 4 when any was found)')
    .action(
      withCache(
        async (handle, flags, { verifyCache }) => {
          const report = await verifyCache(handle);
          if (flags.json) printJson({ ok: report.corrupt.length === 0, ...report });
          else {
            for (const digest of report.corrupt) {
              const links = report.corruptLinks[digest];
              say(
                flags,
                links
                  ? `loom: corrupt blob removed: ${digest}; ${plural(links, 'other hard link')} (outputs or HF cache files placed from the cache) still hold the damaged bytes: delete them and fetch again`
                  : `loom: corrupt blob removed: ${digest}`,
              );
            }
            say(flags, `loom: ${plural(report.checked, 'blob')} checked, ${report.corrupt.length} corrupt`);
          }
          return report.corrupt.length ? EXIT.integrity : EXIT.ok;
        },
        (root, flags) => {
          if (flags.json) printJson({ ok: true, exists: false, checked: 0, corrupt: [], corruptLinks: {} });
          else say(flags, `loom: ${nothingCached(root)}: nothing to verify`);
          return EXIT.ok;
        },
      ),
    );

  cache
    .command('gc')
    .description(
      'remove leftovers, partial downloads and unindexed blobs no running download owns; with --max-size, then evict least recently used blobs until the cache is at most that',
    )
    .option('--max-size <size>', 'size to shrink to, e.g. 200GiB (default: no eviction)')
    .option('--dry-run', 'say what would be evicted, evict nothing')
    .action(
      withCache(
        async (handle, flags, { gcCache }) => {
          const opts = flags as CacheFlags & { maxSize?: string; dryRun?: boolean };
          const maxBytes = opts.maxSize === undefined ? Infinity : parseSize(opts.maxSize, '--max-size');
          const report = await gcCache(handle, maxBytes, opts.dryRun ?? false);
          if (flags.json) printJson({ ok: true, ...report });
          else {
            const verb = report.dryRun ? 'would evict' : 'evicted';
            const removeVerb = report.dryRun ? 'would remove' : 'removed';
            for (const name of report.removedPartials)
              say(flags, `loom: ${removeVerb} the partial download ${name} (no running download owns it)`);
            for (const digest of report.removedUnindexed)
              say(flags, `loom: ${removeVerb} ${digest} (a blob the index does not list)`);
            for (const blob of report.evicted) say(flags, `loom: ${verb} ${blob.digest} (${formatBytes(blob.size)})`);
            for (const digest of report.skippedInUse) say(flags, `loom: kept ${digest}: in use`);
            for (const path of report.removedLeftovers)
              say(flags, `loom: ${removeVerb} ${path}: left by a process that is gone`);
            const done = [
              `${verb} ${plural(report.evicted.length, 'blob')}`,
              ...(report.removedPartials.length > 0
                ? [`${removeVerb} ${plural(report.removedPartials.length, 'partial download')}`]
                : []),
              ...(report.removedUnindexed.length > 0
                ? [`${removeVerb} ${plural(report.removedUnindexed.length, 'unindexed blob')}`]
                : []),
            ];
            say(
              flags,
              `loom: ${done.join(', ')}, ${formatBytes(report.freedBytes)}; ${formatBytes(report.remainingBytes)} remain`,
            );
          }
          return EXIT.ok;
        },
        (root, flags) => {
          const { maxSize } = flags as CacheFlags & { maxSize?: string };
          if (maxSize !== undefined) parseSize(maxSize, '--max-size');
          if (flags.json) printJson({ ok: true, exists: false, evicted: [], freedBytes: 0, remainingBytes: 0 });
          else say(flags, `loom: ${nothingCached(root)}: nothing to evict`);
          return EXIT.ok;
        },
      ),
    );

  cache
    .command('rm')
    .description(
      'remove a blob by digest (or an unambiguous prefix of it), or a source (URL) and its blob if nothing else uses it',
    )
    .argument('<digest-or-source>')
    .action(
      withCache(
        async (handle, flags, { removeFromCache, listCache }, target) => {
          const digest = resolveDigestPrefix(
            target!,
            listCache(handle).blobs.map((b) => b.digest),
          );
          const { removed } = await removeFromCache(handle, digest);
          if (flags.json) printJson({ ok: true, removed });
          else for (const item of removed) say(flags, `loom: removed ${item}`);
          return EXIT.ok;
        },
        (root) => {
          throw new NotFoundError(nothingCached(root));
        },
      ),
    );
  return cache;
}
