// The engine against hostile servers and careless callers: proxies that cut every
// connection, throttling with Retry-After, two runs to one output, a digest mismatch, and a
// kill -9 half way through. Each asserts the real outcome (the file's sha256, the origin's
// byte counts, what is left on disk).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { DigestMismatchError, OutputBusyError, fetchFile, type FetchOptions } from '../../src/index.js';
import { collect, randomContent, REPO_ROOT, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';

const MiB = 1024 * 1024;
const dir = tempDir();
const servers: OriginServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function origin(bytes: Buffer, options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  server.setFile('/file.bin', bytes);
  servers.push(server);
  return server;
}

const FAST: FetchOptions = { retryBaseDelay: 5, retryMaxDelay: 20 };

describe('a hostile origin', () => {
  it('completes behind a proxy that cuts every connection after 64 KiB: the retry budget resets on progress', async () => {
    const content = randomContent(4 * MiB);
    const cut = 64 * 1024;
    const server = await origin(content.bytes, { fault: () => ({ kind: 'reset', afterBytes: cut }) });
    const out = join(dir, 'cut.bin');
    const attempts = 3;
    // 4 MiB is 64 times what 3 attempts of 64 KiB could carry.
    const result = await fetchFile(server.url('/file.bin'), out, {
      ...FAST,
      workers: 2,
      chunkSize: '256KiB',
      retryAttempts: attempts,
    });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(result.stats.retries > attempts * 4, `${result.stats.retries} retries`);
    assert.ok(server.bytesServed >= 4 * MiB);
  });

  it('does not hand a range waiting out Retry-After to another worker before the wait is over', async () => {
    const content = randomContent(8 * MiB);
    let throttled: { start: number; end: number; at: number } | undefined;
    const server = await origin(content.bytes, {
      fault: (ctx) => {
        if (ctx.index !== 2 || !ctx.range) return undefined;
        throttled = { ...ctx.range, at: performance.now() };
        return { kind: 'status', status: 503, headers: { 'retry-after': '1' } };
      },
    });
    const out = join(dir, 'throttled.bin');
    await fetchFile(server.url('/file.bin'), out, { ...FAST, workers: 2, chunkSize: '4MiB' });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(throttled, 'a range was throttled');
    const early = server.requests.filter((r) => {
      const start = Number(/bytes=(\d+)-/.exec(r.range ?? '')?.[1]);
      return r.at > throttled!.at && r.at - throttled!.at < 950 && start >= throttled!.start && start < throttled!.end;
    });
    assert.deepEqual(
      early.map((r) => r.range),
      [],
      'no request for the throttled range within the second it asked for',
    );
  });
});

describe('an object-store origin', () => {
  it('hides first-byte latency: a worker opens its next request before its current one ends', async () => {
    const content = randomContent(4 * MiB);
    let mostConnections = 0;
    const server: OriginServer = await origin(content.bytes, {
      firstByteLatencyMs: 80,
      rateLimitBytesPerSecond: 4 * MiB,
      fault: () => {
        mostConnections = Math.max(mostConnections, server.openConnections);
        return undefined;
      },
    });
    const out = join(dir, 'latency.bin');
    const result = await fetchFile(server.url('/file.bin'), out, { ...FAST, workers: 1, chunkSize: '512KiB' });
    assert.equal(await sha256OfFile(out), content.sha256);
    // One worker alone would reuse one keep-alive connection; a request opened early needs a second.
    assert.ok(mostConnections >= 2, `at most ${mostConnections} connection(s) open at a request`);
    assert.equal(server.bytesServed, 4 * MiB, 'no byte fetched twice');
    assert.equal(result.stats.requests, server.requests.length);
  });
});

describe('careless callers', () => {
  it('refuses a second run to the same output while the first is writing it, and the first completes', async () => {
    const content = randomContent(4 * MiB);
    const server = await origin(content.bytes, { rateLimitBytesPerSecond: 4 * MiB });
    const out = join(dir, 'twice.bin');
    const first = fetchFile(server.url('/file.bin'), out, { ...FAST, workers: 2 });
    await waitFor('the first run to start', () => existsSync(`${out}.part`));
    await assert.rejects(fetchFile(server.url('/file.bin'), out, { ...FAST, workers: 2 }), (err: unknown) => {
      assert.ok(err instanceof OutputBusyError);
      assert.equal(err.code, 'LOOM_ERR_OUTPUT_BUSY');
      assert.match(err.message, new RegExp(`pid ${process.pid}`));
      return true;
    });
    await first;
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(existsSync(`${out}.part.lock`), false, 'the lock is released');
    // The output is free again.
    await fetchFile(server.url('/file.bin'), out, { ...FAST, workers: 2 });
    assert.equal(await sha256OfFile(out), content.sha256);
  });

  it('leaves nothing after a digest mismatch, the journal included', async () => {
    const content = randomContent(3 * MiB);
    const server = await origin(content.bytes, { rateLimitBytesPerSecond: 8 * MiB });
    const out = join(dir, 'mismatch.bin');
    await assert.rejects(
      fetchFile(server.url('/file.bin'), out, { ...FAST, workers: 2, journalInterval: 20, sha256: 'cd'.repeat(32) }),
      DigestMismatchError,
    );
    for (const leftover of [out, `${out}.part`, `${out}.part.journal`, `${out}.part.journal.tmp`, `${out}.part.lock`]) {
      assert.equal(existsSync(leftover), false, `${leftover} is gone`);
    }
  });

  it('after kill -9 part way, the rerun plus the first run take at most 1.25 copies from the origin', async () => {
    const size = 64 * MiB;
    const content = randomContent(size);
    // 3 MiB/s a connection (12 MiB/s for the four): what a run loses at a kill is what the
    // origin sent that it had not journaled yet, bytes in socket buffers included, and a run
    // a loaded machine starves leaves them there. At 48 MiB/s a stall of half a second cost
    // more than the quarter copy allowed (seen: 1.31 copies); at 12 MiB/s it takes two.
    const server = await origin(content.bytes, { rateLimitBytesPerSecond: 3 * MiB });
    const out = join(dir, 'killed.bin');
    const journal = `${out}.part.journal`;
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'test/fetch/fetch-child.ts'), server.url('/file.bin'), out, '{"workers":4}'],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const done = collect(child);
    // A quarter in the journal, then a while later: a kill lands anywhere between two journals.
    await waitFor(
      'a quarter of the file in the journal',
      () => {
        if (!existsSync(journal)) return false;
        const ranges = (JSON.parse(readFileSync(journal, 'utf8')) as { ranges: Array<[number, number]> }).ranges;
        return ranges.reduce((sum, [s, e]) => sum + e - s, 0) >= size / 4;
      },
      30_000,
    );
    await sleep(450);
    child.kill('SIGKILL');
    assert.equal((await done).signal, 'SIGKILL');
    await waitFor('the killed connections to close', () => server.openConnections === 0);
    const firstRun = server.bytesServed;
    server.resetStats();
    const result = await fetchFile(server.url('/file.bin'), out, { workers: 4 });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(result.stats.resumedBytes >= size / 4, 'resumed');
    const total = firstRun + server.bytesServed;
    assert.ok(
      total <= 1.25 * size,
      `first run ${firstRun} + rerun ${server.bytesServed} = ${(total / size).toFixed(3)} copies`,
    );
  });
});
