// The pure parts of the engine: the set of finished ranges, the run plan and tail splits,
// backoff, and the journal's shape.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { RangeSet } from '../../src/fetch/range-set.js';
import { backoffDelay, parseRetryAfter } from '../../src/fetch/retry-policy.js';
import { clientLoadMonitor, MAX_LOAD_TO_SPLIT, planRequestSize, Scheduler } from '../../src/fetch/scheduler.js';

const MiB = 1024 * 1024;

describe('RangeSet', () => {
  it('merges, measures and finds the gaps', () => {
    const set = new RangeSet();
    set.add(10, 20);
    set.add(0, 5);
    set.add(5, 10);
    set.add(30, 40);
    assert.deepEqual(set.toJSON(), [
      [0, 20],
      [30, 40],
    ]);
    assert.equal(set.size, 30);
    assert.equal(set.contiguousPrefix(), 20);
    assert.deepEqual(set.missing(50), [
      [20, 30],
      [40, 50],
    ]);
    assert.equal(set.covers(31, 39), true);
    assert.equal(set.covers(15, 35), false);
  });

  it('agrees with a byte map after thousands of adds in any order (it merges in place)', () => {
    const total = 4096;
    let seed = 7;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 20; round++) {
      const set = new RangeSet();
      const present = new Uint8Array(total);
      for (let i = 0; i < 200; i++) {
        const start = next(total);
        const end = Math.min(total, start + 1 + next(64));
        set.add(start, end);
        present.fill(1, start, end);
        const expected: Array<[number, number]> = [];
        for (let at = 0; at < total; at++) {
          if (!present[at]) continue;
          if (expected.length && expected[expected.length - 1]![1] === at) expected[expected.length - 1]![1] = at + 1;
          else expected.push([at, at + 1]);
        }
        assert.deepEqual(set.toJSON(), expected);
      }
      // What toJSON handed out is a copy: later adds do not change it.
      const snapshot = set.toJSON();
      const copy = JSON.stringify(snapshot);
      set.add(0, total);
      assert.equal(JSON.stringify(snapshot), copy);
    }
  });
});

describe('planning', () => {
  const options = { chunkSize: 10 * MiB, workers: 16, minSplitSize: MiB };

  it('asks for a chunk per request for a big file, or the largest request allowed', () => {
    assert.equal(planRequestSize([[0, 1024 * MiB]], options), 10 * MiB);
    assert.equal(planRequestSize([[0, 1024 * MiB]], { ...options, maxRequestSize: 32 * MiB }), 32 * MiB);
  });

  it('shares a small file evenly in pieces smaller than a chunk', () => {
    assert.equal(planRequestSize([[0, 6 * MiB]], { ...options, workers: 4 }), 1.5 * MiB);
    assert.equal(planRequestSize([[0, 2 * MiB]], options), MiB, 'never below the split minimum');
  });

  it('hands out requests in file order, never across a piece boundary', () => {
    const scheduler = new Scheduler({ ...options, workers: 4, pieceSize: 16 * MiB }, [
      [0, 40 * MiB],
      [50 * MiB, 52 * MiB],
    ]);
    const taken: Array<[number, number, number]> = [];
    for (let task = scheduler.take(); task; task = scheduler.take()) {
      taken.push([task.start / MiB, task.end / MiB, task.piece]);
      scheduler.finish(task);
    }
    assert.deepEqual(taken, [
      [0, 10, 0],
      [10, 16, 0],
      [16, 26, 1],
      [26, 32, 1],
      [32, 40, 2],
      [50, 52, 3],
    ]);
  });

  it('never splits a range waiting out a Retry-After, and gives a failed piece to one source', () => {
    const scheduler = new Scheduler({ ...options, workers: 2, minSplitEtaMs: 0, clientLoad: () => 0 }, [[0, 20 * MiB]]);
    const first = scheduler.take('a')!;
    scheduler.finish(scheduler.take('a')!);
    first.stalled();
    first.holdUntil = performance.now() + 60_000;
    assert.equal(scheduler.take('b'), undefined, 'the throttled range is not handed to another worker');
    first.holdUntil = undefined;
    assert.ok(scheduler.take('b'), 'once the wait is over it may be split');

    const pieces = new Scheduler({ ...options, workers: 2, pieceSize: 4 * MiB, chunkSize: MiB }, []);
    pieces.refetch(1, 4 * MiB, 8 * MiB);
    const mine = pieces.take('a')!;
    assert.equal(mine.piece, 1);
    assert.equal(pieces.take('b'), undefined, 'the rest of the piece waits for the source that took it');
    assert.equal(pieces.take('a')!.start, 5 * MiB);
    pieces.forget('a');
    assert.equal(pieces.take('b')!.start, 6 * MiB, 'a dropped owner frees the piece');
  });

  it('splits the slowest range in flight for an idle worker, at an aligned point', () => {
    const scheduler = new Scheduler({ ...options, workers: 2, minSplitEtaMs: 0, clientLoad: () => 0.3 }, [
      [0, 20 * MiB],
    ]);
    const first = scheduler.take()!;
    assert.deepEqual([first.start, first.end], [0, 10 * MiB]);
    const second = scheduler.take()!;
    assert.deepEqual([second.start, second.end], [10 * MiB, 20 * MiB]);
    scheduler.finish(second);
    first.stalled(); // between attempts: counts as endlessly slow
    const stolen = scheduler.take()!;
    assert.deepEqual([stolen.start, stolen.end], [5 * MiB, 10 * MiB]);
    assert.equal(first.end, 5 * MiB);
    assert.equal(scheduler.splits, 1);
  });

  it('cuts a range far behind the others before handing out the next one; loaded, holds new ranges instead', async () => {
    let load = 0.3;
    const scheduler = new Scheduler({ ...options, workers: 3, minSplitEtaMs: 0, clientLoad: () => load }, [
      [0, 100 * MiB],
    ]);
    const [slow, a, b] = [scheduler.take()!, scheduler.take()!, scheduler.take()!];
    for (const task of [slow, a, b]) task.flowing();
    await sleep(40);
    // Two ranges are half done; the first, which holds the finished prefix, has barely moved.
    slow.pos += 64 * 1024;
    a.pos += 5 * MiB;
    b.pos += 5 * MiB;
    load = 0.95;
    assert.equal(scheduler.take()?.start, 30 * MiB, 'a saturated client goes on in file order');
    slow.holdUntil = performance.now() + 60_000;
    load = 0.3;
    assert.equal(scheduler.take()?.start, 40 * MiB, 'a range waiting out a Retry-After is not cut');
    slow.holdUntil = undefined;
    load = 0.95;
    assert.equal(
      scheduler.take(),
      undefined,
      'loaded, and the prefix now more than a pool of requests behind: no new range ahead of it',
    );
    assert.equal(scheduler.hasWork(), false);
    load = 0.3;
    const stolen = scheduler.take()!;
    assert.deepEqual([stolen.start, stolen.end], [5 * MiB + 64 * 1024, 10 * MiB], 'its back half, not the next chunk');
    assert.equal(slow.end, stolen.start);
    assert.equal(scheduler.queued()[0]!.start, 50 * MiB, 'the queue waits');
    assert.equal(scheduler.splits, 1);
  });

  it('does not cut the range holding the prefix while it keeps pace with the others', async () => {
    const scheduler = new Scheduler({ ...options, workers: 3, minSplitEtaMs: 0, clientLoad: () => 0.3 }, [
      [0, 100 * MiB],
    ]);
    const [first, a, b] = [scheduler.take()!, scheduler.take()!, scheduler.take()!];
    for (const task of [first, a, b]) task.flowing();
    await sleep(40);
    first.pos += 9 * MiB;
    a.pos += 5 * MiB;
    b.pos += 5 * MiB;
    assert.equal(scheduler.take()?.start, 30 * MiB);
    assert.equal(scheduler.splits, 0);
  });

  it('does not split while this process is the bottleneck', () => {
    let load = 0.95;
    const scheduler = new Scheduler({ ...options, workers: 2, minSplitEtaMs: 0, clientLoad: () => load }, [
      [0, 20 * MiB],
    ]);
    const first = scheduler.take()!;
    scheduler.finish(scheduler.take()!);
    first.stalled();
    assert.equal(scheduler.take(), undefined, 'a saturated client gains nothing from a split');
    load = 0.5;
    assert.deepEqual([scheduler.take()?.start, first.end], [5 * MiB, 5 * MiB], 'with time to spare it splits');
  });

  it('reads the process as loaded until measured, and whenever writes waited for the disk', async () => {
    let starved = 0;
    const load = clientLoadMonitor(() => starved);
    assert.equal(load(), 1, 'nothing measured yet');
    await sleep(300);
    assert.ok(load() < MAX_LOAD_TO_SPLIT, 'an idle event loop and no waiting writes');
    starved++;
    await sleep(300);
    assert.equal(load(), 1, 'a writer waited for a free slab');
  });

  it('does not split a range that will finish soon', () => {
    const scheduler = new Scheduler({ ...options, workers: 1 }, [[0, 4 * MiB]]);
    const task = scheduler.take()!;
    task.requested(performance.now());
    assert.equal(scheduler.take(), undefined, 'just requested: not worth a new request');
  });
});

describe('retry policy', () => {
  const policy = { attempts: 6, baseDelayMs: 1000, factor: 2, maxDelayMs: 30_000, maxRetryAfterMs: 120_000 };

  it('backs off exponentially with full jitter, capped', () => {
    assert.equal(
      backoffDelay(policy, 1, undefined, () => 0.5),
      500,
    );
    assert.equal(
      backoffDelay(policy, 3, undefined, () => 0.999),
      3996,
    );
    assert.equal(
      backoffDelay(policy, 10, undefined, () => 1),
      30_000,
    );
  });

  it('waits at least as long as Retry-After says', () => {
    assert.equal(
      backoffDelay(policy, 1, 5000, () => 0.1),
      5000,
    );
    assert.equal(parseRetryAfter('7'), 7000);
    assert.equal(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString())! > 8000, true);
    assert.equal(parseRetryAfter('soon'), undefined);
  });
});
