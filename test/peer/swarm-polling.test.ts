// How often a follower asks the control plane for a blob's holders: every refresh while it
// may soon need a piece nobody it knows holds yet, and only on the slow refreshes (with the
// lease and published-digest questions) once the peers it knows hold more than it can take
// at once. Counted against a fake control plane: the lease is asked once per slow refresh,
// so the ratio of holder questions to lease questions says how many refreshes asked.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { Manifest } from '../../src/core/manifest.js';
import { Swarm, type LeaseAnswer, type PeerHolder, type PieceRecord, type SwarmControl } from '../../src/peer/swarm.js';
import { waitFor } from '../helpers/fixtures.js';

const ID = 'ab'.repeat(32);

class CountingControl implements SwarmControl {
  calls = { holders: 0, lease: 0 };
  constructor(public holding: PeerHolder[]) {}
  sourceDigest(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }
  manifest(): Promise<Manifest | undefined> {
    return Promise.resolve(undefined);
  }
  holders(): Promise<PeerHolder[] | undefined> {
    this.calls.holders++;
    return Promise.resolve(this.holding);
  }
  lease(): Promise<LeaseAnswer | undefined> {
    this.calls.lease++;
    return Promise.resolve({ granted: false });
  }
  renewLease(): Promise<boolean> {
    return Promise.resolve(true);
  }
  releaseLease(): Promise<void> {
    return Promise.resolve();
  }
  announce(): Promise<void> {
    return Promise.resolve();
  }
  putPieces(): Promise<void> {
    return Promise.resolve();
  }
  pieces(): Promise<PieceRecord | undefined> {
    return Promise.resolve(undefined);
  }
  publish(): Promise<void> {
    return Promise.resolve();
  }
  report(): Promise<void> {
    return Promise.resolve();
  }
}

const leader = (pieces: number[] | null, complete = false): PeerHolder => ({
  id: 'leader',
  url: 'http://127.0.0.1:9',
  complete,
  pieces,
});

/**
 * A follower of a leader holding pieces 0-2 (so it may not use the origin and tries the
 * lease on slow refreshes) that then holds `holding`, refreshing every 5 ms until it has
 * asked for the lease `leases` times; the questions counted from the change.
 */
async function follow(holding: PeerHolder[], leases: number): Promise<CountingControl['calls']> {
  const control = new CountingControl([leader([0, 1, 2])]);
  const swarm = new Swarm(control, 'key', ID, { nodeId: 'me', useOrigin: true, stallTimeoutMs: 1_000, refreshMs: 5 });
  after(() => swarm.close());
  const plan = await swarm.prepare(undefined);
  assert.equal(plan.role, 'follower');
  control.holding = holding;
  control.calls = { holders: 0, lease: 0 };
  swarm.start(() => undefined, undefined, false);
  await waitFor('slow refreshes', () => control.calls.lease >= leases);
  await swarm.close();
  return control.calls;
}

describe('swarm: holder questions per refresh', () => {
  it('a follower close behind its peers asks for holders at every refresh', async () => {
    const calls = await follow([leader([0, 1, 2])], 5);
    // Four refreshes per slow one: the first of each asks for the lease after the holders.
    assert.ok(calls.holders >= 4 * (calls.lease - 1), JSON.stringify(calls));
  });

  it('a follower with a complete peer asks for holders on the slow refreshes only', async () => {
    const calls = await follow([leader(null, true)], 5);
    assert.ok(calls.holders <= calls.lease + 1, JSON.stringify(calls));
  });

  it('a follower whose peers hold many pieces it lacks asks on the slow refreshes only', async () => {
    const calls = await follow([leader(Array.from({ length: 12 }, (_, i) => i))], 5);
    assert.ok(calls.holders <= calls.lease + 1, JSON.stringify(calls));
  });
});
