// The node cache end to end: hits by hard link, freshness, presigned URLs, single flight
// across processes, takeover after a kill, and what happens when the cache is unusable.
import assert from 'node:assert/strict';
import {
  chmodSync,
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readlinkSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { withBlobInUse } from '../../src/cache/blob-store.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { lockHolderPid } from '../../src/core/file-lock.js';
import { fetchCached, gcCache, openCache, sourceKey } from '../../src/index.js';
import { collect, randomContent, runLoom, sha256OfFile, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import { cacheTestBed } from './cache-fixtures.js';

const MiB = 1024 * 1024;
const SIZE = 6 * MiB + 7;
const content = randomContent(SIZE);
const dir = tempDir();
const { origin, freshCache } = cacheTestBed(content.bytes, dir);

const FAST = { workers: 4, chunkSize: '1MiB', retryBaseDelay: 5 } as const;

describe('fetchCached', () => {
  it('serves a second fetch from the cache: zero origin bytes, same inode, read-only', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    const first = await fetchCached(server.url('/model.bin'), join(dir, 'a1.bin'), { ...FAST, cacheDir });
    assert.equal(first.cache, 'miss');
    assert.equal(first.sha256, content.sha256);
    assert.equal(server.bytesServed, SIZE);
    server.resetStats();
    const second = await fetchCached(server.url('/model.bin'), join(dir, 'a2.bin'), { ...FAST, cacheDir });
    assert.equal(second.cache, 'hit');
    assert.equal(second.materialization, 'hardlink');
    assert.equal(server.bytesServed, 0, 'no body bytes for a fresh hit');
    assert.equal(server.requests.length, 1, 'one conditional request');
    assert.equal(server.requests[0]!.status, 304);
    const blob = join(cacheDir, 'blobs', 'sha256', content.sha256);
    assert.equal(statSync(join(dir, 'a2.bin')).ino, statSync(blob).ino);
    assert.equal(statSync(join(dir, 'a1.bin')).ino, statSync(blob).ino);
    assert.equal(statSync(blob).mode & 0o222, 0, 'blob and its links are read-only');
    assert.equal(await sha256OfFile(join(dir, 'a2.bin')), content.sha256);
  });

  it('copies, verified, when the output is on another file system', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    await fetchCached(server.url('/model.bin'), join(dir, 'b1.bin'), { ...FAST, cacheDir });
    const other = mountTmpfs(32 * 1024 * 1024);
    const result = await fetchCached(server.url('/model.bin'), join(other, 'b2.bin'), { ...FAST, cacheDir });
    assert.equal(result.cache, 'hit');
    assert.ok(result.materialization === 'copy' || result.materialization === 'reflink');
    assert.equal(await sha256OfFile(join(other, 'b2.bin')), content.sha256);
  });

  it('gives two presigned URLs of one object one entry', async () => {
    const a =
      'https://bucket.s3.amazonaws.com/m.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260101T000000Z&X-Amz-Signature=aa&versionId=3';
    const b =
      'https://bucket.s3.amazonaws.com/m.bin?versionId=3&X-Amz-Signature=bb&X-Amz-Date=20260102T000000Z&X-Amz-Expires=60';
    assert.equal(sourceKey(a), sourceKey(b));
    assert.equal(sourceKey(a), 'https://bucket.s3.amazonaws.com/m.bin?versionId=3');
    assert.notEqual(sourceKey(a), sourceKey(a.replace('versionId=3', 'versionId=4')));
    assert.equal(
      sourceKey('https://cdn.example/x?Expires=1&Signature=s&Key-Pair-Id=k&Policy=p'),
      'https://cdn.example/x',
    );
    assert.equal(sourceKey('https://g.example/x?X-Goog-Signature=s&X-Goog-Date=d'), 'https://g.example/x');

    const server = await origin();
    const cacheDir = freshCache();
    await fetchCached(server.url('/model.bin?X-Amz-Signature=one&X-Amz-Date=1'), join(dir, 'p1.bin'), {
      ...FAST,
      cacheDir,
    });
    server.resetStats();
    const second = await fetchCached(server.url('/model.bin?X-Amz-Signature=two&X-Amz-Date=2'), join(dir, 'p2.bin'), {
      ...FAST,
      cacheDir,
    });
    assert.equal(second.cache, 'hit');
    assert.equal(server.bytesServed, 0);
    const cache = await openCache(cacheDir);
    assert.equal(cache.index.blobs().length, 1);
    cache.close();
  });

  it('resumes a pinned partial under a re-signed URL, and never mixes two versions', async () => {
    // Slow enough to interrupt: 1 MiB/s per connection.
    const server = await origin({ rateLimitBytesPerSecond: 1024 * 1024 });
    const cacheDir = freshCache();
    const interrupted = async (signature: string, pin: string) => {
      const stop = new AbortController();
      const run = fetchCached(server.url(`/model.bin?X-Amz-Signature=${signature}`), join(dir, `r-${signature}.bin`), {
        ...FAST,
        cacheDir,
        sha256: pin,
        signal: stop.signal,
      });
      await waitFor('2 MiB served', () => server.bytesServed >= 2 * 1024 * 1024);
      stop.abort();
      await assert.rejects(run);
    };
    await interrupted('one', content.sha256);
    server.resetStats();
    const resumed = await fetchCached(server.url('/model.bin?X-Amz-Signature=two'), join(dir, 'r2.bin'), {
      ...FAST,
      cacheDir,
      sha256: content.sha256,
    });
    assert.equal(await sha256OfFile(join(dir, 'r2.bin')), content.sha256);
    assert.ok(resumed.stats.resumedBytes > 0, 'the partial of the first signature was resumed');
    assert.ok(server.bytesServed < SIZE, `the origin served ${server.bytesServed} of ${SIZE} bytes`);

    // The object changes (new ETag) under an interrupted pinned partial: the partial is not
    // resumed (the pin is checked only after the download), so the node cache records exactly
    // what the URL serves now, not a mix of the two versions.
    const other = randomContent(SIZE);
    const cacheDir2 = freshCache();
    const path = '/changing.bin';
    server.setFile(path, { content: content.bytes, etag: '"v1"' });
    const stop = new AbortController();
    const first = fetchCached(server.url(`${path}?X-Amz-Signature=a`), join(dir, 'c1.bin'), {
      ...FAST,
      cacheDir: cacheDir2,
      sha256: content.sha256,
      signal: stop.signal,
    });
    server.resetStats();
    await waitFor('2 MiB served', () => server.bytesServed >= 2 * 1024 * 1024);
    stop.abort();
    await assert.rejects(first);
    server.setFile(path, { content: other.bytes, etag: '"v2"' });
    await assert.rejects(
      fetchCached(server.url(`${path}?X-Amz-Signature=b`), join(dir, 'c2.bin'), {
        ...FAST,
        cacheDir: cacheDir2,
        sha256: content.sha256,
      }),
      /sha256 mismatch/,
    );
    assert.equal(existsSync(join(dir, 'c2.bin')), false);
    const cache = await openCache(cacheDir2);
    assert.deepEqual(
      cache.index.blobs().map((blob) => blob.digest),
      [other.sha256],
      'the cache holds the new version whole',
    );
    cache.close();
  });

  it('an origin without validators: a pinned partial resumes, and a mix of two versions is kept nowhere', async () => {
    // Neither ETag nor Last-Modified: only the pin can tell a resumed partial from another version.
    const server = await origin({ rateLimitBytesPerSecond: 1024 * 1024 });
    const path = '/no-validator.bin';
    server.setFile(path, { content: content.bytes, etag: null, lastModified: null });
    const interrupted = async (cacheDir: string, name: string) => {
      const stop = new AbortController();
      const run = fetchCached(server.url(path), join(dir, `${name}.bin`), {
        ...FAST,
        cacheDir,
        sha256: content.sha256,
        signal: stop.signal,
      });
      server.resetStats();
      await waitFor('2 MiB served', () => server.bytesServed >= 2 * 1024 * 1024);
      stop.abort();
      await assert.rejects(run);
    };
    const cacheDir = freshCache();
    await interrupted(cacheDir, 'nv-1');
    server.resetStats();
    const resumed = await fetchCached(server.url(path), join(dir, 'nv-2.bin'), {
      ...FAST,
      cacheDir,
      sha256: content.sha256,
    });
    assert.equal(await sha256OfFile(join(dir, 'nv-2.bin')), content.sha256);
    assert.ok(resumed.stats.resumedBytes > 0, 'the pinned partial was resumed');
    assert.ok(server.bytesServed < SIZE, `the origin served ${server.bytesServed} of ${SIZE} bytes`);

    // The object changes under the partial: the resumed mix misses the pin and is kept
    // nowhere (not recorded as what the URL serves); a rerun downloads the new version whole.
    const mixedCache = freshCache();
    server.setFile(path, { content: content.bytes, etag: null, lastModified: null });
    await interrupted(mixedCache, 'nv-3');
    const other = randomContent(SIZE);
    server.setFile(path, { content: other.bytes, etag: null, lastModified: null });
    await assert.rejects(
      fetchCached(server.url(path), join(dir, 'nv-4.bin'), { ...FAST, cacheDir: mixedCache, sha256: content.sha256 }),
      /sha256 mismatch/,
    );
    assert.equal(existsSync(join(dir, 'nv-4.bin')), false);
    const cache = await openCache(mixedCache);
    assert.deepEqual(cache.index.blobs(), [], 'nothing recorded from a resumed mix');
    cache.close();
    assert.deepEqual(readdirSync(join(mixedCache, 'blobs', 'sha256')), []);
  });

  it('misses when the ETag changed, and keeps serving hits of the new version', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    await fetchCached(server.url('/model.bin'), join(dir, 'e1.bin'), { ...FAST, cacheDir });
    const next = randomContent(SIZE);
    server.setFile('/model.bin', next.bytes);
    server.resetStats();
    const changed = await fetchCached(server.url('/model.bin'), join(dir, 'e2.bin'), { ...FAST, cacheDir });
    assert.equal(changed.cache, 'miss');
    // The whole new file, plus the one byte of the freshness check that found it changed.
    assert.equal(server.bytesServed, SIZE + 1);
    assert.equal(await sha256OfFile(join(dir, 'e2.bin')), next.sha256);
    assert.equal(await sha256OfFile(join(dir, 'e1.bin')), content.sha256, 'the earlier output is untouched');
  });

  it('serves the cached copy offline, or with a warning when the origin is down', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    await fetchCached(url, join(dir, 'o1.bin'), { ...FAST, cacheDir });
    await server.close();
    const offline = await fetchCached(url, join(dir, 'o2.bin'), { ...FAST, cacheDir, offline: true });
    assert.equal(offline.cache, 'hit');
    const messages: string[] = [];
    const down = await fetchCached(url, join(dir, 'o3.bin'), { ...FAST, cacheDir, onStatus: (m) => messages.push(m) });
    assert.equal(down.cache, 'hit');
    assert.match(messages.join('\n'), /could not check .* using the cached copy/);
    assert.equal(await sha256OfFile(join(dir, 'o3.bin')), content.sha256);
  });

  it('does not serve a cached copy whose digest differs from --sha256', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    await fetchCached(server.url('/model.bin'), join(dir, 's1.bin'), { ...FAST, cacheDir });
    const wrong = 'e'.repeat(64);
    await assert.rejects(
      fetchCached(server.url('/model.bin'), join(dir, 's2.bin'), { ...FAST, cacheDir, sha256: wrong }),
      /sha256 mismatch/,
    );
    assert.equal(existsSync(join(dir, 's2.bin')), false);
  });

  it('takes a blob by its digest without asking any origin', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    await fetchCached(server.url('/model.bin'), join(dir, 'd1.bin'), { ...FAST, cacheDir });
    const result = await fetchCached('http://127.0.0.1:9/elsewhere.bin', join(dir, 'd2.bin'), {
      ...FAST,
      cacheDir,
      sha256: content.sha256,
    });
    assert.equal(result.cache, 'hit');
    assert.equal(await sha256OfFile(join(dir, 'd2.bin')), content.sha256);
  });

  it('downloads straight to the output when the cache directory is read-only or full', async () => {
    const server = await origin();
    const readOnly = mountTmpfs(1024 * 1024, { readOnly: true });
    const messages: string[] = [];
    const ro = await fetchCached(server.url('/model.bin'), join(dir, 'ro.bin'), {
      ...FAST,
      cacheDir: join(readOnly, 'cache'),
      onStatus: (m) => messages.push(m),
    });
    assert.equal(ro.cache, 'bypass');
    assert.match(messages[0]!, /cache unusable .*read-only file system/);
    assert.equal(await sha256OfFile(join(dir, 'ro.bin')), content.sha256);

    const full = mountTmpfs(2 * 1024 * 1024);
    messages.length = 0;
    const small = await fetchCached(server.url('/model.bin'), join(dir, 'full.bin'), {
      ...FAST,
      cacheDir: full,
      onStatus: (m) => messages.push(m),
    });
    assert.equal(small.cache, 'bypass');
    assert.match(messages[0]!, /cache unusable .*not enough space/);
    assert.equal(await sha256OfFile(join(dir, 'full.bin')), content.sha256);
  });

  it('two fetches to one output with an unusable cache: the output holds the bytes that were checked', async () => {
    const server = await origin();
    // A file as the cache root: the cache cannot be used, the downloads go straight to the output.
    const cacheDir = join(dir, 'cache-is-a-file');
    writeFileSync(cacheDir, 'not a directory\n');
    const out = join(dir, 'shared-out.bin');
    const v2 = randomContent(SIZE);
    let aChecked: string | undefined;
    let releaseA!: () => void;
    let releaseB!: () => void;
    const aGate = new Promise<void>((r) => (releaseA = r));
    const bGate = new Promise<void>((r) => (releaseB = r));
    let aChecking!: () => void;
    let bChecking!: () => void;
    const aIsChecking = new Promise<void>((r) => (aChecking = r));
    const bIsChecking = new Promise<void>((r) => (bChecking = r));
    // The check of the first run, held while the second run starts (the Hub's git sha1 of a small file).
    const a = fetchCached(server.url('/model.bin'), out, {
      ...FAST,
      cacheDir,
      verifyDownload: async (path) => {
        aChecked = await sha256OfFile(path);
        aChecking();
        await aGate;
      },
    });
    await aIsChecking;
    assert.equal(aChecked, content.sha256);
    // The origin now serves other bytes: what the second run downloads must not reach the
    // output through the first one's rename.
    server.setFile('/model.bin', v2.bytes);
    const b = fetchCached(server.url('/model.bin'), out, {
      ...FAST,
      cacheDir,
      verifyDownload: async () => {
        bChecking();
        await bGate;
      },
    }).then(
      (r) => r,
      (err: unknown) => err as Error & { code?: string },
    );
    await Promise.race([bIsChecking, b]);
    releaseA();
    const first = await a;
    releaseB();
    const second = await b;
    assert.equal(first.cache, 'bypass');
    assert.equal(await sha256OfFile(out), content.sha256, 'the output holds what the first run checked');
    assert.ok(second instanceof Error, 'the second run is refused while the first holds the output');
    assert.equal(second.code, 'LOOM_ERR_OUTPUT_BUSY', second.message);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith('shared-out.bin')),
      ['shared-out.bin'],
      'nothing left beside the output',
    );
  });

  it('gc evicts least recently used first and leaves a blob in use', async () => {
    const cacheDir = freshCache();
    const files = [randomContent(1024 * 1024), randomContent(1024 * 1024), randomContent(1024 * 1024)];
    const server = await origin();
    files.forEach((f, i) => server.setFile(`/f${i}`, f.bytes));
    for (let i = 0; i < files.length; i++) {
      await fetchCached(server.url(`/f${i}`), join(dir, `gc${i}.bin`), { ...FAST, cacheDir });
      await sleep(5);
    }
    // Use f0 again (a hit served from its hint; openCache folds that use into the index):
    // now f1 is the least recently used, then f2, then f0.
    await fetchCached(server.url('/f0'), join(dir, 'gc0-again.bin'), { ...FAST, cacheDir, offline: true });
    const cache = await openCache(cacheDir);
    try {
      const dry = await gcCache(cache, 1024 * 1024, true);
      assert.deepEqual(
        dry.evicted.map((b) => b.digest),
        [files[1]!.sha256, files[2]!.sha256],
      );
      assert.equal(cache.index.blobs().length, 3, 'dry run removes nothing');
      const layout = cacheLayout(cacheDir);
      const report = await withBlobInUse(layout, files[1]!.sha256, () => gcCache(cache, 1024 * 1024));
      assert.deepEqual(report.skippedInUse, [files[1]!.sha256]);
      assert.deepEqual(
        report.evicted.map((b) => b.digest),
        [files[2]!.sha256, files[0]!.sha256],
      );
      assert.deepEqual(readdirSync(layout.blobs), [files[1]!.sha256]);
    } finally {
      cache.close();
    }
  });
});

describe('loom fetch and loom cache, several processes', () => {
  it('four concurrent processes make the origin serve the file once', async () => {
    const server = await origin({ rateLimitBytesPerSecond: 8 * 1024 * 1024 });
    const cacheDir = freshCache();
    const outs = [0, 1, 2, 3].map((i) => join(dir, `multi${i}.bin`));
    const runs = await Promise.all(
      outs.map((out) =>
        runLoom(['fetch', server.url('/model.bin'), '-o', out, '--json', '-w', '4'], { LOOM_CACHE_DIR: cacheDir }),
      ),
    );
    for (const run of runs) assert.equal(run.code, 0, run.stderr);
    for (const out of outs) assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(server.bytesServed <= SIZE + 4, `origin served ${server.bytesServed} bytes for a ${SIZE}-byte file`);
    const summaries = runs.map((r) => JSON.parse(r.stdout) as { cache: string });
    // The other three are hits: waited for the download, or (started late on a busy machine)
    // found it finished.
    assert.deepEqual(summaries.map((s) => s.cache).sort(), ['hit', 'hit', 'hit', 'miss']);
  });

  /**
   * Starts a download, waits until it owns the source's lock, starts a second process for the
   * same URL with `waiterFlags`, kills the first mid-download and returns what the second did.
   */
  async function killTheDownloaderOfAWaiter(name: string, waiterFlags: string[]) {
    // Past its first 2 MiB the downloader's requests are held until it is killed: at 2 MiB/s it
    // would be done in 3 s, before a loaded machine got the waiter waiting, which would then
    // find a finished download instead of a dead owner.
    let releaseTheRest!: () => void;
    const theRest = new Promise<void>((resolve) => (releaseTheRest = resolve));
    after(releaseTheRest);
    const server = await origin({
      rateLimitBytesPerSecond: 1024 * 1024,
      fault: (ctx) => (ctx.range && ctx.range.start >= 2 * MiB ? { kind: 'hold', until: theRest } : undefined),
    });
    const cacheDir = freshCache();
    const env = { LOOM_CACHE_DIR: cacheDir };
    const fetch = (out: string) => ['fetch', server.url('/model.bin'), '-o', out, '-w', '2', '--chunk-size', '1MiB'];
    const downloader = startLoom([...fetch(join(dir, `${name}-1.bin`)), '-q'], env);
    const downloaded = collect(downloader);
    await waitFor(
      'the downloader to hold the source lock',
      () =>
        readdirSync(join(cacheDir, 'locks')).some((f) => lockHolderPid(join(cacheDir, 'locks', f)) === downloader.pid),
      30_000,
    );
    const out = join(dir, `${name}-2.bin`);
    const waiterProcess = startLoom([...fetch(out), ...waiterFlags], env);
    const waiter = collect(waiterProcess);
    let waiterSaid = '';
    waiterProcess.stderr?.on('data', (d: Buffer) => (waiterSaid += d.toString()));
    // It says so, unless --json keeps it quiet: then it has the index open, a moment before it
    // first finds the lock held. That moment is given generously (the downloader is held, so it
    // costs only time): killed before the waiter's first look, the owner is found gone without
    // the waiter having waited.
    const quiet = waiterFlags.includes('--json');
    const indexOpen = () =>
      readdirSync(`/proc/${waiterProcess.pid}/fd`).some(
        (fd) => readlinkSync(`/proc/${waiterProcess.pid}/fd/${fd}`) === join(cacheDir, 'index.db'),
      );
    await waitFor(
      'the waiter to wait',
      () => (quiet ? indexOpen() : waiterSaid.includes('waiting for another process')),
      30_000,
    );
    await waitFor('the downloader to have its first 2 MiB', () => server.bytesServed >= 2 * MiB, 30_000);
    await sleep(quiet ? 3_000 : 500);
    downloader.kill('SIGKILL');
    assert.equal((await downloaded).signal, 'SIGKILL', 'the downloader was still downloading');
    const servedBeforeKill = server.bytesServed;
    // The waiter's requests from here on are answered.
    releaseTheRest();
    const run = await waiter;
    return {
      run,
      out,
      cacheDir,
      downloaderPid: downloader.pid,
      servedAfterKill: server.bytesServed - servedBeforeKill,
    };
  }

  it("a waiter sees that the downloader's pid is gone and says so as it takes over", async () => {
    const { run, out, cacheDir, downloaderPid } = await killTheDownloaderOfAWaiter('pid', []);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /waiting for another process/);
    assert.match(run.stderr, new RegExp(`\\(pid ${downloaderPid}\\) is gone; taking over its partial`));
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.deepEqual(
      readdirSync(join(cacheDir, 'locks')).filter(
        (f) => f.startsWith('source-') && (!f.endsWith('.lock') || lockHolderPid(join(cacheDir, 'locks', f))),
      ),
      [],
      'no lock left held, no owner record left behind',
    );
  });

  it('a waiter takes over when the downloading process is killed, resuming its partial', async () => {
    const { run, out, servedAfterKill } = await killTheDownloaderOfAWaiter('resume', ['--json']);
    assert.equal(run.code, 0, run.stderr);
    const summary = JSON.parse(run.stdout) as { cache: string; resumedBytes: number; waitedForOtherProcess: boolean };
    assert.equal(summary.cache, 'miss');
    assert.ok(summary.resumedBytes > 0, 'resumed the dead process partial');
    assert.equal(summary.waitedForOtherProcess, true, 'it did wait, then took over');
    assert.ok(servedAfterKill < SIZE, 'the waiter fetched less than the whole file');
    assert.equal(await sha256OfFile(out), content.sha256);
  });

  it('LOOM_OFFLINE=1 serves the cached copy without asking the origin', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    const env = { LOOM_CACHE_DIR: cacheDir };
    assert.equal((await runLoom(['fetch', server.url('/model.bin'), '-o', join(dir, 'off1.bin'), '-q'], env)).code, 0);
    server.resetStats();
    const run = await runLoom(['fetch', server.url('/model.bin'), '-o', join(dir, 'off2.bin'), '--json'], {
      ...env,
      LOOM_OFFLINE: '1',
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal((JSON.parse(run.stdout) as { cache: string }).cache, 'hit');
    assert.equal(server.requests.length, 0, 'no request at all');
    assert.equal(await sha256OfFile(join(dir, 'off2.bin')), content.sha256);
  });

  it('cache verify finds and removes a blob corrupted on purpose; ls and rm work', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    const env = { LOOM_CACHE_DIR: cacheDir };
    assert.equal((await runLoom(['fetch', server.url('/model.bin'), '-o', join(dir, 'v.bin'), '-q'], env)).code, 0);
    const ls = await runLoom(['cache', 'ls', '--json'], env);
    const listing = JSON.parse(ls.stdout) as {
      blobs: Array<{ digest: string; sources: string[] }>;
      totalBytes: number;
    };
    assert.equal(listing.totalBytes, SIZE);
    assert.deepEqual(listing.blobs[0]!.sources, [server.url('/model.bin')]);

    const clean = await runLoom(['cache', 'verify'], env);
    assert.equal(clean.code, 0, clean.stderr);
    const blob = join(cacheDir, 'blobs', 'sha256', content.sha256);
    chmodSync(blob, 0o644);
    const fd = openSync(blob, 'r+');
    // Flip the byte: writing a fixed value left the blob unchanged whenever the random content
    // already held it there (1 run in 256).
    writeSync(fd, Buffer.from([content.bytes[1000]! ^ 0xff]), 0, 1, 1000);
    closeSync(fd);
    const bad = await runLoom(['cache', 'verify', '--json'], env);
    assert.equal(bad.code, 4);
    const verdict = JSON.parse(bad.stdout) as { corrupt: string[]; corruptLinks: Record<string, number> };
    assert.deepEqual(verdict.corrupt, [content.sha256]);
    // v.bin is a hard link to the blob: it holds the damaged bytes too, and verify says so.
    assert.deepEqual(verdict.corruptLinks, { [content.sha256]: 1 });
    assert.equal(existsSync(blob), false);

    assert.equal((await runLoom(['fetch', server.url('/model.bin'), '-o', join(dir, 'v2.bin'), '-q'], env)).code, 0);
    const rm = await runLoom(['cache', 'rm', server.url('/model.bin'), '--json'], env);
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual((JSON.parse(rm.stdout) as { removed: string[] }).removed, [
      server.url('/model.bin'),
      content.sha256,
    ]);
    const missing = await runLoom(['cache', 'rm', 'f'.repeat(64)], env);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no blob/);
  });
});
