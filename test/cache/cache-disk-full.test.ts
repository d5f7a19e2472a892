// A cache whose disk fills up mid-download while --out is on another file system (a real
// tmpfs as the cache): the download goes on at --out with the bytes it has, the cache keeps
// no partial, the result counts the whole fetch, and a later fetch still uses the cache.
// And what such runs leave (a killed fetch's partial): `loom cache ls` shows it and a plain
// `loom cache gc` removes it.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, statfsSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { fetchCached } from '../../src/index.js';
import { collect, randomContent, runLoom, sha256OfFile, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { closersRunAfterAll, startTestControlPlane } from '../peer/peer-fixtures.js';

const MiB = 1024 * 1024;
/** Two of these do not fit on the cache's disk together; one does, with room for SMALL. */
const SIZE = 16 * MiB + 3;
const CACHE_DISK = 24 * MiB;
const SMALL = 4 * MiB;
/** Three pieces (16 MiB each, the last shorter), on a disk that holds it with little to spare. */
const BIG = 40 * MiB + 3;
const BIG_CACHE_DISK = 48 * MiB;
const files = { a: randomContent(SIZE), b: randomContent(SIZE), c: randomContent(SMALL), d: randomContent(BIG) };
const dir = tempDir();
const closers = closersRunAfterAll();
const servers: OriginServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

/** Serves a, b and c; slow enough per connection that both big downloads overlap. */
async function origin(options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer({ rateLimitBytesPerSecond: 2 * MiB, ...options }).listen();
  for (const [name, file] of Object.entries(files)) server.setFile(`/${name}.bin`, file.bytes);
  servers.push(server);
  return server;
}

/** An origin during whose download another program fills the cache's disk (at `filler`) once a few MiB are down. */
function originFilling(filler: string): Promise<OriginServer> {
  return origin({
    fault: (ctx) => {
      if (ctx.index === 6) writeFileSync(filler, Buffer.alloc(CACHE_DISK - 6 * MiB));
      return undefined;
    },
  });
}

const FLAGS = { workers: 4, chunkSize: '1MiB', maxRequestSize: '1MiB', retryBaseDelay: 5 } as const;

/** FLAGS on the command line, with --json. */
function cliFlags(cacheDir: string): string[] {
  return ['--cache-dir', cacheDir, '-w', '4', '--chunk-size', '1MiB', '--max-request-size', '1MiB', '--json'];
}

/** Loom's files in the cache's tmp/: partial downloads and their journals. */
function partialsIn(cacheDir: string): string[] {
  return readdirSync(cacheLayout(cacheDir).tmp).filter((f) => /\.part/.test(f));
}

describe('a cache disk that fills up mid-download, --out elsewhere', () => {
  it('goes on at --out with the bytes it has: no second download, no partial left, the whole fetch reported', async () => {
    const server = await origin();
    const cacheDir = join(mountTmpfs(CACHE_DISK), 'cache');
    const run = async (name: 'a' | 'b') => {
      const said: Array<{ message: string; at: number }> = [];
      const begun = performance.now();
      const result = await fetchCached(server.url(`/${name}.bin`), join(dir, `lib-${name}.bin`), {
        ...FLAGS,
        cacheDir,
        onStatus: (message) => said.push({ message, at: performance.now() }),
      });
      return { name, result, said, begun };
    };
    const runs = await Promise.all([run('a'), run('b')]);
    for (const { name } of runs) assert.equal(await sha256OfFile(join(dir, `lib-${name}.bin`)), files[name].sha256);
    // Each byte once, but for the requests in flight when the disk filled (4 workers, 1 MiB each).
    assert.ok(
      server.bytesServed <= 2 * SIZE + 2 * 4 * MiB,
      `origin served ${server.bytesServed} bytes for two files of ${SIZE}`,
    );
    const spilled = runs.filter((r) => r.result.cache === 'bypass');
    assert.ok(spilled.length > 0, 'the disk filled up under at least one download');
    for (const { result, said, begun } of spilled) {
      const bypassed = result.bypassed!;
      assert.match(bypassed.reason, /^cache unusable \(no space left while writing .*\.part\)$/);
      assert.ok(bypassed.movedBytes > 0, 'the bytes downloaded into the cache were moved, not fetched again');
      const told = said.find((s) => /cache unusable/.test(s.message));
      assert.ok(told, said.map((s) => s.message).join('\n'));
      assert.match(told.message, /moved the .* downloaded so far to .*\.part and going on straight to/);
      // The time of the whole fetch, not of its second half.
      assert.ok(result.seconds * 1000 >= told.at - begun, `${result.seconds} s reported`);
    }
    assert.deepEqual(partialsIn(cacheDir), [], 'the cache keeps no partial');

    // The cache's disk is not held full: a later fetch is stored there.
    const later = await fetchCached(server.url('/c.bin'), join(dir, 'lib-c.bin'), { ...FLAGS, cacheDir });
    assert.equal(later.cache, 'miss');
    assert.equal(await sha256OfFile(join(dir, 'lib-c.bin')), files.c.sha256);
    assert.ok(existsSync(join(cacheLayout(cacheDir).blobs, files.c.sha256)));
  });

  it('a process that waited for the download, then went straight to --out, says it waited', async () => {
    const server = await origin();
    const tmpfs = mountTmpfs(CACHE_DISK);
    const cacheDir = join(tmpfs, 'cache');
    let waiting!: () => void;
    const waited = new Promise<void>((resolve) => (waiting = resolve));
    const first = fetchCached(server.url('/a.bin'), join(dir, 'wait-1.bin'), { ...FLAGS, cacheDir });
    // The second starts once the first owns the download: started together, either may win the
    // lock, and a second that owned it would never say it waited.
    await waitFor('the first download under way', () => server.bytesServed > 0, 30_000);
    const second = fetchCached(server.url('/a.bin'), join(dir, 'wait-2.bin'), {
      ...FLAGS,
      cacheDir,
      onStatus: (message) => {
        if (/waiting for another process/.test(message)) waiting();
      },
    });
    await Promise.race([
      waited,
      second.then(() => assert.fail('the second fetch ended without waiting for the first')),
    ]);
    // The disk fills under the first download and stays full: the waiter cannot use it either.
    const { bavail, bsize } = statfsSync(tmpfs);
    writeFileSync(join(tmpfs, 'filler'), Buffer.alloc(Math.max(0, bavail * bsize - 64 * 1024)));
    const [a, b] = await Promise.all([first, second]);
    for (const out of ['wait-1.bin', 'wait-2.bin']) assert.equal(await sha256OfFile(join(dir, out)), files.a.sha256);
    assert.equal(b.cache, 'bypass');
    assert.equal(b.waited, true);
    assert.equal(a.waited, false);
  });

  it('a download pinned with --sha256 resumes the moved bytes at --out too', async () => {
    const disk = mountTmpfs(CACHE_DISK);
    const cacheDir = join(disk, 'cache');
    const filler = join(disk, 'filler');
    const server = await originFilling(filler);
    const out = join(dir, 'pinned.bin');
    const result = await fetchCached(server.url('/a.bin'), out, { ...FLAGS, cacheDir, sha256: files.a.sha256 });
    assert.equal(result.cache, 'bypass');
    assert.ok(result.bypassed!.movedBytes >= MiB, `${result.bypassed!.movedBytes} bytes moved`);
    assert.equal(result.stats.resumedBytes, 0, 'nothing came from an earlier run');
    assert.equal(await sha256OfFile(out), files.a.sha256);
    assert.ok(server.bytesServed <= SIZE + 4 * MiB, `origin served ${server.bytesServed} bytes for ${SIZE}`);
    assert.deepEqual(partialsIn(cacheDir), []);
    assert.equal(existsSync(`${out}.part`), false);
  });

  it('a download planned with peers moves its verified pieces, only those, to --out and goes on there', async () => {
    const cp = (await startTestControlPlane(closers)).url;
    const disk = mountTmpfs(BIG_CACHE_DISK);
    const cacheDir = join(disk, 'cache');
    const tmp = cacheLayout(cacheDir).tmp;
    // Ranges past 20 MiB wait until the first piece (16 MiB) is verified (its pieces record
    // says so), then another program fills the cache's disk: 16-20 MiB are on disk, not verified.
    let filled: Promise<void> | undefined;
    const fill = () =>
      (filled ??= (async () => {
        await waitFor(
          'the first piece verified',
          () => existsSync(tmp) && readdirSync(tmp).some((f) => f.endsWith('.pieces.json')),
          30_000,
        );
        const { bavail, bsize } = statfsSync(disk);
        writeFileSync(join(disk, 'filler'), Buffer.alloc(Math.max(0, bavail * bsize - 64 * 1024)));
      })());
    const server = await origin({
      rateLimitBytesPerSecond: 16 * MiB,
      fault: (ctx) =>
        ctx.path === '/d.bin' && ctx.range && ctx.range.start >= 20 * MiB ? { kind: 'hold', until: fill() } : undefined,
    });
    const out = join(dir, 'planned-pieces.bin');
    const said: string[] = [];
    const result = await fetchCached(server.url('/d.bin'), out, {
      ...FLAGS,
      cacheDir,
      onStatus: (message) => said.push(message),
      planner: new PeerPlanner({
        controlPlane: cp,
        nodeId: 'spill-pieces',
        followerWaitMs: 3_000,
        publishWaitMs: 10_000,
      }),
    });
    assert.equal(result.cache, 'bypass');
    assert.equal(result.bypassed!.movedBytes, 16 * MiB, 'the verified piece, not the unverified bytes after it');
    assert.ok(
      said.some((m) => /moved the 16\.8 MB downloaded so far to .*\.part and going on straight to/.test(m)),
      said.join('\n'),
    );
    assert.equal(await sha256OfFile(out), files.d.sha256);
    // The piece moved is not fetched again: the first attempt (at most 20 MiB and the 4
    // requests in flight) and the rest from 16 MiB.
    assert.ok(server.bytesServed <= BIG + 10 * MiB, `origin served ${server.bytesServed} bytes for ${BIG}`);
    // No peer here: every byte of both attempts was the origin's.
    const bySource = (result as { bytesBySource?: Record<string, number> }).bytesBySource!;
    assert.deepEqual(Object.keys(bySource), ['origin']);
    assert.ok(bySource.origin! >= BIG, JSON.stringify(bySource));
    // Both attempts counted: the moved piece's bytes and what came after the move.
    assert.ok(result.stats.transferredBytes >= BIG, `${result.stats.transferredBytes} bytes transferred`);
    assert.deepEqual(readdirSync(tmp), [], 'no partial, no pieces record');
    assert.equal(existsSync(`${out}.part`), false);
  });

  it('a download planned with peers with no piece verified yet removes its partial and restarts at --out', async () => {
    const cp = (await startTestControlPlane(closers)).url;
    const disk = mountTmpfs(CACHE_DISK);
    const cacheDir = join(disk, 'cache');
    const server = await origin({
      fault: (ctx) => {
        if (ctx.index === 6) writeFileSync(join(disk, 'filler'), Buffer.alloc(CACHE_DISK - 6 * MiB));
        return undefined;
      },
    });
    const out = join(dir, 'planned.bin');
    const result = await fetchCached(server.url('/a.bin'), out, {
      ...FLAGS,
      cacheDir,
      planner: new PeerPlanner({ controlPlane: cp, nodeId: 'spill', followerWaitMs: 3_000, publishWaitMs: 10_000 }),
    });
    assert.equal(result.cache, 'bypass');
    assert.equal(result.bypassed!.movedBytes, 0);
    assert.equal(await sha256OfFile(out), files.a.sha256);
    assert.deepEqual(readdirSync(cacheLayout(cacheDir).tmp), [], 'no partial, no pieces record');
  });

  it('loom fetch -o link/../out/x.bin: the output disk is the one the kernel writes to, not the one resolve() names', async () => {
    const disk = mountTmpfs(CACHE_DISK);
    const cacheDir = join(disk, 'cache');
    const filler = join(disk, 'filler');
    const server = await originFilling(filler);
    // The run's folder is on the cache's disk, and so is its out/; `link` leads to another
    // disk, where the kernel makes and writes link/../out/x.bin.
    const cwd = join(disk, 'work');
    mkdirSync(join(cwd, 'out'), { recursive: true });
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(join(elsewhere, 'inner'), { recursive: true });
    symlinkSync(join(elsewhere, 'inner'), join(cwd, 'link'));
    const run = await runLoom(
      ['fetch', server.url('/a.bin'), '-o', 'link/../out/x.bin', ...cliFlags(cacheDir)],
      {},
      cwd,
    );
    assert.equal(run.code, 0, run.stderr);
    const doc = JSON.parse(run.stdout) as { cache: string; cacheBypass: { movedBytes: number } | null };
    assert.equal(doc.cache, 'bypass');
    assert.ok(doc.cacheBypass && doc.cacheBypass.movedBytes > 0, JSON.stringify(doc));
    assert.equal(await sha256OfFile(join(elsewhere, 'out', 'x.bin')), files.a.sha256);
    assert.deepEqual(readdirSync(join(cwd, 'out')), []);
  });

  it('loom fetch --json: exit 0 for both, the switch said on stderr and in the JSON', async () => {
    const server = await origin();
    const cacheDir = join(mountTmpfs(CACHE_DISK), 'cache');
    const fetch = (name: 'a' | 'b') =>
      runLoom(['fetch', server.url(`/${name}.bin`), '-o', join(dir, `cli-${name}.bin`), ...cliFlags(cacheDir)]);
    const [a, b] = await Promise.all([fetch('a'), fetch('b')]);
    const docs = [a, b].map((r) => {
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as {
        cache: string;
        sha256: string;
        cacheBypass: { reason: string; movedBytes: number } | null;
      };
    });
    assert.equal(docs[0]!.sha256, files.a.sha256);
    assert.equal(docs[1]!.sha256, files.b.sha256);
    assert.equal(await sha256OfFile(join(dir, 'cli-a.bin')), files.a.sha256);
    assert.equal(await sha256OfFile(join(dir, 'cli-b.bin')), files.b.sha256);
    assert.ok(server.bytesServed <= 2 * SIZE + 2 * 4 * MiB, `origin served ${server.bytesServed} bytes`);
    const spilled = [a, b].filter((_, i) => docs[i]!.cache === 'bypass');
    assert.ok(spilled.length > 0, 'the disk filled up under at least one download');
    for (const [i, doc] of docs.entries()) {
      if (doc.cache !== 'bypass') continue;
      assert.ok(doc.cacheBypass && doc.cacheBypass.movedBytes > 0, JSON.stringify(doc));
      assert.match([a, b][i]!.stderr, /loom: warning: cache unusable \(no space left/);
    }
    assert.deepEqual(partialsIn(cacheDir), []);
    const later = await runLoom([
      'fetch',
      server.url('/c.bin'),
      '-o',
      join(dir, 'cli-c.bin'),
      '--cache-dir',
      cacheDir,
      '--json',
    ]);
    assert.equal(later.code, 0, later.stderr);
    assert.equal((JSON.parse(later.stdout) as { cache: string }).cache, 'miss');
  });
});

describe('what an abandoned download leaves', () => {
  it("loom cache ls shows a killed fetch's partial, and a plain loom cache gc removes it", async () => {
    const server = await origin();
    const cacheDir = join(tempDir(), 'cache');
    const out = join(dir, 'killed.bin');
    const child = startLoom(['fetch', server.url('/a.bin'), '-o', out, '--cache-dir', cacheDir, '-w', '2']);
    const done = collect(child);
    await waitFor(
      'bytes in the partial',
      () => existsSync(join(cacheDir, 'tmp')) && server.bytesServed > 2 * MiB,
      30_000,
    );
    child.kill('SIGKILL');
    await done;
    assert.notDeepEqual(partialsIn(cacheDir), []);

    const ls = await runLoom(['cache', 'ls', '--cache-dir', cacheDir]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^0 blobs, .* in /m);
    assert.match(
      ls.stdout,
      /of which .* in partial downloads \(tmp\/\): loom cache gc removes those no running download owns/,
    );

    // Whatever size is asked for: nothing owns it.
    const dry = await runLoom(['cache', 'gc', '--max-size', '1TiB', '--dry-run', '--cache-dir', cacheDir]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stderr, /would remove the partial download [0-9a-f]{32}/);
    assert.notDeepEqual(partialsIn(cacheDir), [], 'a dry run removes nothing');

    const gc = await runLoom(['cache', 'gc', '--cache-dir', cacheDir]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.match(gc.stderr, /removed the partial download [0-9a-f]{32} \(no running download owns it\)/);
    assert.match(gc.stderr, /evicted 0 blobs, removed 1 partial download, .*; 0 B remain/);
    assert.deepEqual(partialsIn(cacheDir), []);
    const again = await runLoom(['cache', 'ls', '--cache-dir', cacheDir, '--json']);
    assert.equal((JSON.parse(again.stdout) as { totalBytes: number }).totalBytes, 0);
  });
});
