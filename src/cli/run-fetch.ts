// Runs `loom fetch` once its flags are parsed (by commander or by the fast parser): the
// download or cache hit, the progress bar, the summary and the exit code.
import { basename } from 'node:path';
import { EXIT } from '../core/errors.js';
import { fetchCached, type CachedFetchResult } from '../cache/cached-fetch.js';
import type { FetchResult } from '../fetch/fetch-file.js';
import { fetchOptionsFrom, resolveOut, urlOf, type FetchFlags } from './fetch-flags.js';
import { summaryLine, summaryOf } from './fetch-summary.js';
import { printJson, reportError, say } from './output.js';
import { createProgressView, wantsProgressBar } from './progress.js';
import { onInterrupt } from './signals.js';

export async function runFetch(urlArg: string | undefined, flags: FetchFlags): Promise<number> {
  const interrupt = onInterrupt();
  try {
    const url = urlOf(urlArg, flags);
    const out = resolveOut(flags.out, url);
    const view = createProgressView(basename(out), wantsProgressBar(flags));
    const options = fetchOptionsFrom(flags, interrupt.signal);
    options.onProgress = (p) => view.update(p);
    let result: FetchResult | CachedFetchResult;
    try {
      result = url.startsWith('hf://')
        ? // hf:// (the Hub): resolved to its commit, fetched and verified by src/hub/fetch-hf-file.ts.
          await (
            await import('../hub/fetch-hf-file.js')
          ).fetchHfFile(url, out, {
            ...options,
            cache: flags.cache,
            cacheDir: flags.cacheDir,
            onStatus: (message) => (wantsProgressBar(flags) ? view.status(message) : say(flags, `loom: ${message}`)),
          })
        : flags.cache
          ? await fetchCached(url, out, {
              ...options,
              cacheDir: flags.cacheDir,
              offline: flags.offline,
              onStatus: (message) => (wantsProgressBar(flags) ? view.status(message) : say(flags, `loom: ${message}`)),
            })
          : await (await import('../fetch/fetch-file.js')).fetchFile(url, out, options);
    } finally {
      view.stop();
    }
    if (flags.json) printJson(summaryOf(result));
    else say(flags, summaryLine(result));
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
