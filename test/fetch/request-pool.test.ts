// The request pool a pull's downloads share: slots first come first served, a new file let
// in only when no worker waits, a reservation for a file's first request, and waits that
// end when their download does.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RequestPool } from '../../src/fetch/request-pool.js';

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
