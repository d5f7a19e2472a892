// The request pool a pull's downloads share: slots first come first served, a new file let
// in only when no worker waits, a reservation for a file's first request, waits that end
// when their download does, and a slot given up while its range waits out a Retry-After.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchFile } from '../../src/fetch/fetch-file.js';
import { RequestPool } from '../../src/fetch/request-pool.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const live = (): AbortSignal => new AbortController().signal;

describe('RequestPool', () => {
  it('holds at most its size; a released slot goes to the longest waiter', async () => {
    const pool = new RequestPool(2);
    const a = await pool.acquire(live());
    const b = await pool.acquire(live());
    assert.ok(a && b);
    assert.equal(pool.inUse, 2);
    const order: string[] = [];
    const c = pool.acquire(live()).then((slot) => (order.push('c'), slot));
    const d = pool.acquire(live()).then((slot) => (order.push('d'), slot));
    a.release();
    a.release(); // idempotent: frees one slot, not two
    const gotC = await c;
    assert.deepEqual(order, ['c']);
    assert.equal(pool.inUse, 2);
    b.release();
    await d;
    assert.deepEqual(order, ['c', 'd']);
    gotC!.release();
    assert.equal(pool.inUse, 1);
  });

  it('lets a new file in only when a slot is free that no waiting worker wants', async () => {
    const pool = new RequestPool(1);
    const worker = (await pool.acquire(live()))!;
    const waiting = pool.acquire(live());
    let admitted = false;
    const admission = pool.admit(live()).then((member) => ((admitted = true), member));
    worker.release();
    const second = (await waiting)!;
    await Promise.resolve();
    assert.equal(admitted, false, 'the waiting worker went first');
    second.release();
    const member = (await admission)!;
    assert.equal(pool.inUse, 1, 'the new file holds its reserved slot');
    // Its first request runs on the reservation, at once, though the pool is full.
    const first = (await member.acquire(live()))!;
    assert.equal(pool.inUse, 1);
    first.release();
    member.close();
    assert.equal(pool.inUse, 0);
  });

  it('gives back a reservation never used (a cache hit)', async () => {
    const pool = new RequestPool(1);
    const member = (await pool.admit(live()))!;
    assert.equal(pool.inUse, 1);
    member.close();
    member.close();
    assert.equal(pool.inUse, 0);
  });

  it('ends a wait with undefined when its signal aborts; the slot then goes to the file waiting', async () => {
    const pool = new RequestPool(1);
    const held = (await pool.acquire(live()))!;
    const stop = new AbortController();
    const waiting = pool.acquire(stop.signal);
    const admission = pool.admit(live());
    stop.abort();
    assert.equal(await waiting, undefined);
    held.release();
    const member = await admission;
    assert.ok(member, 'admitted once no worker waits');
    assert.equal(pool.inUse, 1);
    member.close();
    assert.equal(await pool.acquire(AbortSignal.abort()), undefined);
    assert.equal(pool.inUse, 0);
  });
});

describe('downloads sharing a RequestPool', () => {
  const dir = tempDir('loom-pool-');

  it("a range waiting out Retry-After gives its slot to another file's download meanwhile", async () => {
    const big = randomContent(2 * 1024 * 1024);
    const small = randomContent(100_000);
    let throttledAt: number | undefined;
    let throttled!: () => void;
    const wasThrottled = new Promise<void>((resolve) => (throttled = resolve));
    const server = await new OriginServer({
      fault: (ctx) => {
        // The big file's second request (the first after its probe) is told to wait 5 s: the
        // small file's request must come meanwhile, which a loaded machine may delay by seconds.
        if (ctx.path !== '/big.bin' || throttledAt !== undefined || ctx.index < 2) return undefined;
        throttledAt = performance.now();
        setImmediate(throttled);
        return { kind: 'status', status: 503, headers: { 'retry-after': '5' } };
      },
    }).listen();
    server.setFile('/big.bin', big.bytes);
    server.setFile('/small.bin', small.bytes);
    try {
      const pool = new RequestPool(1);
      const options = { workers: 1, chunkSize: '256KiB', fsync: false, requestPool: pool } as const;
      const first = fetchFile(server.url('/big.bin'), join(dir, 'big.bin'), options);
      await wasThrottled;
      const second = fetchFile(server.url('/small.bin'), join(dir, 'small.bin'), options);
      await Promise.all([first, second]);
      assert.equal(await sha256OfFile(join(dir, 'big.bin')), big.sha256);
      assert.equal(await sha256OfFile(join(dir, 'small.bin')), small.sha256);
      const smallAt = server.requests.find((r) => r.path === '/small.bin')!.at;
      const retriedAt = server.requests.filter((r) => r.path === '/big.bin' && r.at > throttledAt!)[0]!.at;
      assert.ok(smallAt < retriedAt, 'the small file was fetched while the big one waited');
      assert.equal(pool.inUse, 0);
    } finally {
      await server.close();
    }
  });

  it('many workers waiting for a slot of a small pool raise no listener-leak warning', async () => {
    const file = randomContent(4 * 1024 * 1024);
    const server = await new OriginServer().listen();
    server.setFile('/many.bin', file.bytes);
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(`${warning.name}: ${warning.message}`);
    process.on('warning', onWarning);
    try {
      const options = { workers: 16, chunkSize: '256KiB', fsync: false, requestPool: new RequestPool(1) } as const;
      await fetchFile(server.url('/many.bin'), join(dir, 'many.bin'), options);
      // Warnings are emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(await sha256OfFile(join(dir, 'many.bin')), file.sha256);
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
      await server.close();
    }
  });
});
