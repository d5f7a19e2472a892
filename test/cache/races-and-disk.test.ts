// Processes racing for one source, and a cache that fills its disk: a stopped downloader
// keeps its lock (the kernel holds it for the live process), a waiter pinned to another
// digest does not take what the downloader got, gc counts and collects what the index does
// not know about, and an index write refused by a full disk costs neither the download nor
// a raw SQLite error.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { PID_TEMP_GRACE_MS } from '../../src/cache/cache-admin.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { hintPath } from '../../src/cache/hit-hints.js';
import { acquireSourceLock, keyHash } from '../../src/cache/single-flight.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { lockHolderPid } from '../../src/core/file-lock.js';
import { fetchCached, gcCache, listCache, openCache, sourceKey } from '../../src/index.js';
import {
  collect,
  randomContent,
  REPO_ROOT,
  sha256OfFile,
  sha256Of,
  startLoom,
  tempDir,
  waitFor,
  type RunResult,
} from '../helpers/fixtures.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import { cacheTestBed, originGate } from './cache-fixtures.js';

const SIZE = 6 * 1024 * 1024 + 5;
const content = randomContent(SIZE);
const dir = tempDir();
const { origin, freshCache } = cacheTestBed(content.bytes, dir);

/** A `loom fetch` whose stderr can be watched while it runs. */
function fetchProcess(url: string, out: string, env: NodeJS.ProcessEnv, flags: string[] = []) {
  const child: ChildProcess = startLoom(['fetch', url, '-o', out, '-w', '2', '--chunk-size', '1MiB', ...flags], env);
  let said = '';
  child.stderr?.on('data', (d: Buffer) => (said += d.toString()));
  const done: Promise<RunResult> = collect(child);
  return { child, done, said: () => said };
}

async function holdsTheLock(cacheDir: string, pid: number | undefined): Promise<void> {
  await waitFor(
    'the downloader to hold the source lock',
    () => readdirSync(join(cacheDir, 'locks')).some((f) => lockHolderPid(join(cacheDir, 'locks', f)) === pid),
    30_000,
  );
}

describe('processes racing for one source', () => {
  it('a stopped downloader keeps its lock: the waiter takes its blob afterwards, the origin serves it once', async () => {
    // The downloader's answers held until the waiter waits: it cannot be done first.
    const gate = originGate();
    const server = await origin({ rateLimitBytesPerSecond: 512 * 1024, fault: gate.fault });
    const cacheDir = freshCache();
    const env = { LOOM_CACHE_DIR: cacheDir };
    const url = server.url('/model.bin');
    const downloader = fetchProcess(url, join(dir, 'stop-1.bin'), env, ['--json']);
    await holdsTheLock(cacheDir, downloader.child.pid);
    const waiter = fetchProcess(url, join(dir, 'stop-2.bin'), env);
    await waitFor('the waiter to wait', () => waiter.said().includes('waiting for another process'), 30_000);
    gate.open();
    await waitFor('the download under way', () => server.bytesServed > 0, 30_000);
    // Longer than any heartbeat's staleness: a live owner's lock is never taken over.
    downloader.child.kill('SIGSTOP');
    await sleep(7_000);
    downloader.child.kill('SIGCONT');
    const [first, second] = await Promise.all([downloader.done, waiter.done]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(second.code, 0, second.stderr);
    assert.equal((JSON.parse(first.stdout) as { cache: string }).cache, 'miss', 'the downloader kept its download');
    assert.equal(await sha256OfFile(join(dir, 'stop-1.bin')), content.sha256);
    assert.equal(await sha256OfFile(join(dir, 'stop-2.bin')), content.sha256);
    // A few stalled chunks asked again after the stop, never a second download.
    assert.ok(server.bytesServed < SIZE * 1.5, `origin served ${server.bytesServed} bytes for a ${SIZE}-byte file`);
    assert.doesNotMatch(second.stderr, /taking over/);
  });

  it('a download another process finishes while this one decides on a miss is taken, not repeated', async () => {
    // This process (B) finds a cached copy, asks the origin about it and hears it changed; the
    // origin answers only after another process (A) has downloaded the new version and recorded
    // it. B then finds the lock free: it must see that A's download is newer than the copy it
    // judged, and take it, however long it took between its look and the lock.
    const next = randomContent(SIZE);
    let conditionals = 0;
    let other: Promise<unknown> | undefined;
    const cacheDir = freshCache();
    const url = () => server.url('/model.bin');
    const server = await origin({
      fault: (ctx) => {
        if (ctx.headers['if-none-match'] === undefined || ++conditionals !== 1) return undefined;
        other = fetchCached(url(), join(dir, 'decide-a.bin'), { workers: 2, chunkSize: '1MiB', cacheDir });
        return { kind: 'hold', until: other };
      },
    });
    await fetchCached(url(), join(dir, 'decide-0.bin'), { workers: 2, chunkSize: '1MiB', cacheDir });
    server.setFile('/model.bin', next.bytes);
    server.resetStats();
    // Both go to the index and ask the origin there (a hint would be asked first, before the index).
    rmSync(hintPath(cacheLayout(cacheDir), sourceKey(url())));
    const b = await fetchCached(url(), join(dir, 'decide-b.bin'), {
      workers: 2,
      chunkSize: '1MiB',
      cacheDir,
      revalidateTimeoutMs: 60_000,
    });
    assert.ok(other, 'the origin was asked about the cached copy');
    const a = (await other) as Awaited<ReturnType<typeof fetchCached>>;
    assert.equal(a.cache, 'miss');
    assert.equal(b.cache, 'hit');
    assert.equal(b.waited, true);
    assert.equal(await sha256OfFile(join(dir, 'decide-a.bin')), next.sha256);
    assert.equal(await sha256OfFile(join(dir, 'decide-b.bin')), next.sha256);
    // One download of the new version, and a byte for each of the two conditional requests.
    assert.ok(server.bytesServed <= SIZE + 2, `origin served ${server.bytesServed} bytes for a ${SIZE}-byte file`);
  });

  it('a waiter pinned to another digest fails with a mismatch; one pinned to the right digest takes the blob', async () => {
    // The downloader's answers held until the pinned waiter waits: it cannot be done first.
    const gate = originGate();
    const server = await origin({ rateLimitBytesPerSecond: 1024 * 1024, fault: gate.fault });
    const cacheDir = freshCache();
    const env = { LOOM_CACHE_DIR: cacheDir };
    const url = server.url('/model.bin');
    const downloader = fetchProcess(url, join(dir, 'pin-0.bin'), env, ['-q']);
    await holdsTheLock(cacheDir, downloader.child.pid);
    const wrong = fetchProcess(url, join(dir, 'pin-wrong.bin'), env, ['--sha256', 'e'.repeat(64)]);
    const right = fetchProcess(url, join(dir, 'pin-right.bin'), env, ['--sha256', content.sha256, '--json']);
    await waitFor('the pinned waiter to wait', () => wrong.said().includes('waiting for another process'), 30_000);
    gate.open();
    const [zero, bad, good] = await Promise.all([downloader.done, wrong.done, right.done]);
    assert.equal(zero.code, 0, zero.stderr);
    assert.equal(bad.code, 4, bad.stderr);
    assert.match(bad.stderr, /sha256 mismatch/);
    assert.equal(existsSync(join(dir, 'pin-wrong.bin')), false);
    assert.equal(good.code, 0, good.stderr);
    assert.equal(await sha256OfFile(join(dir, 'pin-right.bin')), content.sha256);
    assert.ok(server.bytesServed <= SIZE + 4, `origin served ${server.bytesServed} bytes for a ${SIZE}-byte file`);
  });
});

describe('a full disk', () => {
  it('gc counts and collects blobs without an index row and abandoned partials, not a running one', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    const layout = cacheLayout(cacheDir);
    await fetchCached(server.url('/model.bin'), join(dir, 'gc-1.bin'), { workers: 2, chunkSize: '1MiB', cacheDir });
    // A blob stored by a download whose index record was lost.
    const stray = randomContent(1024 * 1024);
    writeFileSync(join(layout.blobs, stray.sha256), stray.bytes, { mode: 0o444 });
    // A download abandoned (its lock free) and one running (its lock held by this process).
    const abandonedKey = sourceKey('http://example.invalid/abandoned.bin');
    const runningKey = sourceKey('http://example.invalid/running.bin');
    const abandoned = await acquireSourceLock(layout, abandonedKey, { isDone: async () => false });
    const running = await acquireSourceLock(layout, runningKey, { isDone: async () => false });
    assert.ok(abandoned !== 'done' && running !== 'done');
    writeFileSync(join(layout.tmp, `${keyHash(abandonedKey)}.part`), Buffer.alloc(2 * 1024 * 1024, 1));
    writeFileSync(join(layout.tmp, `${keyHash(abandonedKey)}.part.journal`), '{}');
    writeFileSync(join(layout.tmp, `${keyHash(runningKey)}.part`), Buffer.alloc(1024 * 1024, 2));
    await abandoned.release();

    const cache = await openCache(cacheDir);
    try {
      const listing = listCache(cache);
      assert.equal(listing.unindexedBytes, 1024 * 1024);
      assert.equal(listing.partialBytes, 3 * 1024 * 1024 + 2);
      assert.equal(listing.totalBytes, SIZE + 4 * 1024 * 1024 + 2);
      // Room for all but the abandoned partial.
      const report = await gcCache(cache, SIZE + 2 * 1024 * 1024);
      await running.release();
      assert.deepEqual(report.removedUnindexed, [], 'not while a download runs: it may be recording its blob');
      assert.deepEqual(report.removedPartials, [keyHash(abandonedKey)]);
      assert.deepEqual(report.evicted, []);
      assert.equal(
        existsSync(join(layout.tmp, `${keyHash(runningKey)}.part`)),
        true,
        'the running download keeps its part',
      );
      assert.deepEqual(readdirSync(layout.tmp).sort(), [`${keyHash(runningKey)}.part`]);

      const again = await gcCache(cache, SIZE);
      assert.deepEqual(again.removedUnindexed, [stray.sha256]);
      assert.deepEqual(again.removedPartials, [keyHash(runningKey)], 'abandoned now');
      assert.deepEqual(again.evicted, []);
      assert.equal(again.remainingBytes, SIZE);
      assert.deepEqual(readdirSync(layout.blobs), [content.sha256]);
      assert.equal(listCache(cache).totalBytes, SIZE);
    } finally {
      cache.close();
    }
  });

  it('gc counts what a kill -9 leaves (temp files, a pieces record without its part) and removes it once its owner is gone', async () => {
    // The first piece (16 MiB) verifies, the rest never comes: the planned download is still
    // running when the child is killed.
    const big = randomContent(24 * 1024 * 1024);
    const server = await origin({
      fault: (ctx) =>
        ctx.range && ctx.range.start >= 20 * 1024 * 1024
          ? { kind: 'hold', until: new Promise(() => undefined) }
          : undefined,
    });
    server.setFile('/big.bin', big.bytes);
    const cacheDir = freshCache();
    const layout = cacheLayout(cacheDir);
    const url = server.url('/big.bin');
    const id = sourceBlobId(sourceKey(url));
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'test/cache/leftovers-child.ts'), cacheDir, url],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        cwd: REPO_ROOT,
      },
    );
    const exited = collect(child);
    const pid = child.pid!;
    const failedTemp = `locks/source-${keyHash(sourceKey('http://example.invalid/failed.bin'))}.failed.json.${pid}.tmp`;
    const manifestTemp = `manifests/${'e'.repeat(64)}.json.${pid}.tmp`;
    const pieces = `tmp/${id}.pieces.json`;
    await waitFor('the planned download to record a verified piece', () => existsSync(join(cacheDir, pieces)), 30_000);
    const leftoverBytes = statSync(join(cacheDir, failedTemp)).size + statSync(join(cacheDir, manifestTemp)).size;

    const cache = await openCache(cacheDir);
    try {
      // The planned download holds the lock of its id: gc tells it from a killed one.
      assert.equal(lockHolderPid(join(layout.locks, `source-${id}.lock`)), pid);
      assert.equal(listCache(cache).leftoverBytes, leftoverBytes, 'counted');
      const live = await gcCache(cache, 0);
      assert.deepEqual([live.removedLeftovers, live.removedPartials], [[], []], 'nothing of a live process');
      assert.ok(existsSync(join(cacheDir, failedTemp)) && existsSync(join(cacheDir, pieces)));

      child.kill('SIGKILL');
      await exited;
      // Its lock free, the killed download is abandoned at once (no hour of grace by mtime).
      const dry = await gcCache(cache, 0, true);
      assert.deepEqual(dry.removedPartials, [id]);
      // The killed download's part, collected (here by hand): its journal and pieces record stay.
      rmSync(join(layout.tmp, `${id}.part`));
      const tmpLeft = readdirSync(layout.tmp).sort();
      assert.ok(tmpLeft.includes(`${id}.pieces.json`), tmpLeft.join(', '));
      const expected = [failedTemp, manifestTemp, ...tmpLeft.map((f) => `tmp/${f}`)].sort();
      const listed = listCache(cache);
      assert.equal(listed.partialBytes, 0, 'nothing resumable is left');
      assert.equal(listed.totalBytes, listed.leftoverBytes);
      assert.ok(listed.leftoverBytes > leftoverBytes);

      // The manifest's temp file is named by a pid that is gone, but it is young: its writer
      // could be in another pid namespace, about to rename it. Once old, it is abandoned.
      const young = await gcCache(cache, 1024 ** 4, true);
      assert.ok(!young.removedLeftovers.includes(manifestTemp), young.removedLeftovers.join(', '));
      const old = (Date.now() - PID_TEMP_GRACE_MS - 60_000) / 1000;
      utimesSync(join(cacheDir, manifestTemp), old, old);

      // Room for everything: leftovers go anyway.
      const report = await gcCache(cache, 1024 ** 4);
      assert.deepEqual(report.removedLeftovers.sort(), expected);
      assert.equal(report.freedBytes, listed.leftoverBytes);
      assert.deepEqual(readdirSync(layout.tmp), []);
      assert.deepEqual(readdirSync(join(cacheDir, 'manifests')), []);
      assert.deepEqual(
        readdirSync(layout.locks).filter((f) => f.endsWith('.tmp')),
        [],
      );
      assert.equal(listCache(cache).totalBytes, 0);
    } finally {
      cache.close();
      child.kill('SIGKILL');
    }
  });

  it('gc neither counts nor removes files Loom did not name (a --cache-dir pointed at the wrong folder)', async () => {
    const cacheDir = freshCache();
    const layout = cacheLayout(cacheDir);
    const cache = await openCache(cacheDir);
    try {
      // What /tmp holds when --cache-dir is /: other programs' files, old enough to look abandoned.
      const old = new Date(Date.now() - 3 * 60 * 60 * 1000);
      for (const name of ['notes.txt', 'build.part', 'x.part.journal']) {
        writeFileSync(join(layout.tmp, name), 'not loom\n');
        utimesSync(join(layout.tmp, name), old, old);
      }
      writeFileSync(join(layout.blobs, 'README'), 'not a blob\n');
      assert.equal(listCache(cache).totalBytes, 0);
      const report = await gcCache(cache, 0);
      assert.deepEqual([report.removedPartials, report.removedUnindexed], [[], []]);
      assert.deepEqual(readdirSync(layout.tmp).sort(), ['build.part', 'notes.txt', 'x.part.journal']);
      assert.deepEqual(readdirSync(layout.blobs), ['README']);
    } finally {
      cache.close();
    }
  });

  it('a full disk shared by the cache and the output fails once, saying so, without a second download', async () => {
    const server = await origin();
    const disk = mountTmpfs(4 * 1024 * 1024);
    const messages: string[] = [];
    const out = join(disk, 'model.bin');
    await assert.rejects(
      fetchCached(server.url('/model.bin'), out, {
        workers: 2,
        chunkSize: '1MiB',
        cacheDir: join(disk, 'cache'),
        onStatus: (m) => messages.push(m),
      }),
      (err: Error) => {
        assert.match(err.message, /the file system holding both the cache .* and .*model\.bin is full/);
        return true;
      },
    );
    assert.deepEqual(
      messages.filter((m) => /downloading straight/.test(m)),
      [],
    );
    assert.ok(server.bytesServed < SIZE, `origin served ${server.bytesServed} bytes: one attempt`);
    assert.equal(existsSync(out), false);
  });

  it('an index write refused by a full disk is a cache error that says so, and the file is still delivered', async () => {
    const server = await origin({ rateLimitBytesPerSecond: 1024 * 1024 });
    const cacheDir = mountTmpfs(16 * 1024 * 1024);
    const layout = cacheLayout(cacheDir);
    const messages: string[] = [];
    const out = join(dir, 'full-index.bin');
    const fetching = fetchCached(server.url('/model.bin'), out, {
      workers: 2,
      chunkSize: '1MiB',
      cacheDir,
      preallocation: 'fallocate',
      onStatus: (m) => messages.push(m),
    });
    // Once the part file has all its space, fill the rest of the disk.
    await waitFor('the part file to be allocated', () =>
      readdirSync(layout.tmp).some((f) => f.endsWith('.part') && statSync(join(layout.tmp, f)).blocks * 512 >= SIZE),
    );
    const fd = openSync(join(cacheDir, 'filler'), 'w');
    for (const chunk of [1024 * 1024, 4096, 512]) {
      try {
        for (;;) writeSync(fd, Buffer.alloc(chunk));
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'ENOSPC');
      }
    }
    closeSync(fd);
    const result = await fetching;
    assert.equal(result.cache, 'miss');
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.match(messages.join('\n'), /the disk holding the cache is full: could not record .* in the cache index/);
    assert.ok(server.bytesServed <= SIZE + 4, 'downloaded once');
    assert.equal(sha256Of(content.bytes), result.sha256);
  });
});
