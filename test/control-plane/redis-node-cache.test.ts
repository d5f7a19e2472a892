// Two control-plane processes on one Redis, each with its copy of the node records locate
// reads (RedisStore's node cache): what one replica learns (a removal, a new registration,
// a new address) must reach the other's answers through pub/sub, long before the copy
// would be read again, and at once on the replica that handled it. The second replica is
// `loom control-plane` in a process of its own, its copy kept for a minute.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import { RedisStore } from '../../src/control-plane/redis-store.js';
import { collect, startLoom, waitFor } from '../helpers/fixtures.js';
import { freePort, REDIS_URL } from '../helpers/redis.js';
import { beat, startService, type Service } from './harness.js';

/** Far longer than any wait below: a copy the other replica was not told about outlives them. */
const OTHER_CACHE = '60s';
/** How long the other replica may take to hear of a change (pub/sub on loopback: milliseconds). */
const HEARD_WITHIN_MS = 10_000;

interface Peer {
  id: string;
  url: string;
}

/** Each test its own blob, so what one leaves behind does not meet the next. */
async function peers(base: string, D: string): Promise<Peer[]> {
  const res = await fetch(`${base}/v1/blobs/${D}/peers`);
  assert.equal(res.status, 200, await res.clone().text());
  return ((await res.json()) as { peers: Peer[] }).peers;
}

/** The second replica: `loom control-plane` on the same Redis and prefix. */
async function startOther(prefix: string): Promise<{ base: string; stop: () => Promise<unknown> }> {
  const port = await freePort();
  const child = startLoom([
    'control-plane',
    '--listen',
    `127.0.0.1:${port}`,
    '--store',
    REDIS_URL,
    '--redis-prefix',
    prefix,
    '--redis-node-cache',
    OTHER_CACHE,
  ]);
  const done = collect(child);
  const stop = () => {
    child.kill('SIGTERM');
    return done;
  };
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor('the second control plane', async () => ((await fetch(`${base}/readyz`)).ok ? true : undefined));
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${(await stop()).stderr}`);
  }
  return { base, stop };
}

describe('Redis node cache across control-plane replicas', () => {
  const prefix = `loomtest-nc-${randomBytes(4).toString('hex')}`;
  let here: Service;
  let other: string;
  let stopOther: (() => Promise<unknown>) | undefined;
  const raw = createClient({ url: REDIS_URL });

  before(async () => {
    await raw.connect();
    here = await startService(new RedisStore({ url: REDIS_URL, prefix }));
    await waitFor('the first control plane', async () =>
      (await here.call('GET', '/readyz')).status === 200 ? true : undefined,
    );
    ({ base: other, stop: stopOther } = await startOther(prefix));
  });
  after(async () => {
    await stopOther?.();
    await raw.close();
  });

  it('a node removed on one replica vanishes from the other, even a replica left behind by a race', async () => {
    const D = 'd'.repeat(64);
    assert.equal((await beat(here, 'gone')).status, 200);
    assert.equal((await here.call('PUT', `/v1/blobs/${D}/replicas/gone`, { complete: true })).status, 200);
    // The other replica reads the record now and keeps it.
    assert.deepEqual(
      (await peers(other, D)).map((p) => p.id),
      ['gone'],
    );
    const field = `${prefix}:{${D}}:complete`;
    const recorded = await raw.hGet(field, 'gone');
    assert.ok(recorded, 'the replica is stored');

    assert.equal((await here.call('DELETE', '/v1/nodes/gone')).status, 204);
    // A replica announced while the node was being removed (HOLD read the old registration
    // before the removal, the write landed after it) stays behind in Redis: only the node's
    // record tells locate it is not the node's.
    await raw.hSet(field, 'gone', recorded);
    assert.deepEqual(await peers(`${here.url}`, D), [], 'the replica that removed it answers without it at once');
    await waitFor(
      'the other replica to drop the removed node',
      async () => ((await peers(other, D)).length === 0 ? true : undefined),
      HEARD_WITHIN_MS,
    );
    await raw.hDel(field, 'gone');
  });

  it('a new address reaches the other replica', async () => {
    const D = 'e'.repeat(64);
    assert.equal((await beat(here, 'mover', { url: 'http://old.test:7071' })).status, 200);
    assert.equal((await here.call('PUT', `/v1/blobs/${D}/replicas/mover`, { complete: true })).status, 200);
    assert.deepEqual(await peers(other, D), [
      { id: 'mover', url: 'http://old.test:7071', zone: null, complete: true, pieces: null, freeUploadSlots: 0 },
    ]);

    assert.equal((await beat(here, 'mover', { url: 'http://new.test:7071' })).status, 200);
    assert.equal((await peers(here.url, D))[0]?.url, 'http://new.test:7071', 'at once where the heartbeat landed');
    await waitFor(
      'the other replica to answer with the new address',
      async () => ((await peers(other, D))[0]?.url === 'http://new.test:7071' ? true : undefined),
      HEARD_WITHIN_MS,
    );
    assert.equal((await here.call('DELETE', '/v1/nodes/mover')).status, 204);
  });

  it('a node that restarts (new epoch) is located by its new replicas on the other replica', async () => {
    const D = 'f'.repeat(64);
    assert.equal((await beat(here, 'boot', { epoch: 'one' })).status, 200);
    assert.equal((await here.call('PUT', `/v1/blobs/${D}/replicas/boot`, { complete: true })).status, 200);
    assert.deepEqual(
      (await peers(other, D)).map((p) => p.id),
      ['boot'],
    );

    // The restart drops the replicas of the first boot; the node announces its blob again.
    const restarted = await beat(here, 'boot', { epoch: 'two' });
    assert.equal((restarted.body as { resync: boolean }).resync, true);
    assert.equal((await here.call('PUT', `/v1/blobs/${D}/replicas/boot`, { complete: true })).status, 200);
    assert.deepEqual(
      (await peers(here.url, D)).map((p) => p.id),
      ['boot'],
      'at once where the heartbeat landed',
    );
    // The other replica's copy has the first boot's registration: until it hears of the
    // new one, the new replica does not look like the node's.
    await waitFor(
      'the other replica to locate the restarted node',
      async () => ((await peers(other, D)).map((p) => p.id).join() === 'boot' ? true : undefined),
      HEARD_WITHIN_MS,
    );
  });
});
