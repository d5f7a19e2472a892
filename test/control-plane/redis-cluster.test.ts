// Redis as a cluster needs it: every key one hash tag (a node's keys its own, a blob's its
// digest), writes that must not interleave one script, and a replica its node recorded
// under an ended registration never served. Checked on the machine's Redis, then the
// whole contract and the spread of keys on a real three-master Redis Cluster started here.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import { RedisStore } from '../../src/control-plane/redis-store.js';
import { clusterUnavailable, REDIS_URL, startRedisCluster, type RedisCluster } from '../helpers/redis.js';
import { contractSuite, manifestOf } from './contract-cases.js';
import { beat, D1, D2, prefix, ready, startService } from './harness.js';

async function keysOf(url: string, match: string): Promise<string[]> {
  const client = createClient({ url });
  await client.connect();
  try {
    const keys: string[] = [];
    for await (const batch of client.scanIterator({ MATCH: match })) keys.push(...(batch as string[]));
    return keys.sort();
  } finally {
    await client.close();
  }
}

const tagOf = (key: string): string[] => key.match(/\{[^}]*\}/g) ?? [];

describe('Redis key layout and atomicity', () => {
  it("gives each node's keys its own hash tag and a blob's keys its digest", async () => {
    const tagged = `${prefix}-tags`;
    const s = await startService(new RedisStore({ url: REDIS_URL, prefix: tagged }));
    await ready(s.store);
    await beat(s, 'n-a', { zone: 'z1' });
    await beat(s, 'n-b', { zone: 'z2' });
    assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, manifestOf(4, 4))).status, 201);
    await s.call('PUT', `/v1/blobs/${D1}/replicas/n-a`, { complete: true });
    await s.call('PUT', `/v1/blobs/${D1}/replicas/n-b`, { complete: false, pieces: [0] });
    assert.equal((await s.call('POST', '/v1/reports', { digest: D1, node: 'n-b', reporter: 'n-a' })).status, 202);
    assert.equal((await s.call('POST', `/v1/blobs/${D1}/leases`, { node: 'n-a' })).status, 200);
    assert.equal((await s.call('PUT', '/v1/sources', { key: 'hf://org/model/w.bin', digest: D1 })).status, 200);

    const keys = await keysOf(REDIS_URL, `${tagged}:*`);
    for (const key of keys) assert.equal(tagOf(key).length, 1, `${key} has one hash tag`);
    const byTag = new Map<string, string[]>();
    for (const key of keys) byTag.set(tagOf(key)[0]!, [...(byTag.get(tagOf(key)[0]!) ?? []), key]);
    assert.deepEqual(byTag.get('{node:n-a}'), [`${tagged}:{node:n-a}:holds`, `${tagged}:{node:n-a}:rec`]);
    assert.deepEqual(byTag.get('{node:n-b}'), [`${tagged}:{node:n-b}:holds`, `${tagged}:{node:n-b}:rec`]);
    assert.deepEqual(
      byTag.get(`{${D1}}`),
      ['complete', 'fencing', 'leases', 'manifest', 'partial', 'pieces', 'reports'].map(
        (k) => `${tagged}:{${D1}}:${k}`,
      ),
    );
    // No key outside a node's own tag names a node: nothing about nodes sits in one slot but the index.
    const shared = keys.filter((k) => !k.includes('{node:') && /n-[ab]/.test(k));
    assert.deepEqual(shared, []);
  });

  it("decides a new node's resync once when its first heartbeats race", async () => {
    const store = new RedisStore({ url: REDIS_URL, prefix: `${prefix}-race` });
    await ready(store);
    try {
      const now = Date.now();
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, () =>
          store.heartbeat(
            {
              id: 'racer',
              url: 'http://racer:7071',
              zone: undefined,
              freeUploadSlots: 1,
              expiresAt: now + 60_000,
              epoch: 'e1',
            },
            now,
          ),
        ),
      );
      assert.equal(outcomes.filter((o) => o.resync).length, 1);
    } finally {
      await store.dropAll();
      await store.close();
    }
  });

  it('counts the distinct reporters of concurrent reports exactly', async () => {
    const store = new RedisStore({ url: REDIS_URL, prefix: `${prefix}-reports` });
    await ready(store);
    try {
      const now = Date.now();
      const counts = await Promise.all(
        Array.from({ length: 20 }, (_, i) => store.report(D1, 'suspect', `reporter-${i}`, now, 60_000)),
      );
      assert.deepEqual(
        counts.sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
    } finally {
      await store.dropAll();
      await store.close();
    }
  });

  it('never locates a replica its node recorded under an ended registration, even one a clean-up missed', async () => {
    const tagged = `${prefix}-reg`;
    const store = new RedisStore({ url: REDIS_URL, prefix: tagged });
    await ready(store);
    const client = createClient({ url: REDIS_URL });
    await client.connect();
    try {
      const now = Date.now();
      const node = (epoch: string) => ({
        id: 'phoenix',
        url: 'http://phoenix:7071',
        zone: undefined,
        freeUploadSlots: 1,
        expiresAt: now + 60_000,
        epoch,
      });
      const query = { now, asker: undefined, zone: undefined, limit: 8, partialTtlMs: 30_000 };
      await store.heartbeat(node('boot-1'), now);
      assert.equal(
        await store.putReplica(
          { digest: D2, nodeId: 'phoenix', complete: true, pieces: undefined, updatedAt: now },
          now,
        ),
        true,
      );
      const old = await client.hGet(`${tagged}:{${D2}}:complete`, 'phoenix');
      assert.equal(typeof old, 'string');
      // The node restarts with an empty cache; its old replica is dropped...
      assert.equal((await store.heartbeat(node('boot-2'), now)).resync, true);
      assert.deepEqual(await store.locate(D2, query), []);
      // ...and one left behind (a control plane that died between the two writes) is not served either.
      await client.hSet(`${tagged}:{${D2}}:complete`, 'phoenix', old!);
      assert.deepEqual(await store.locate(D2, query), []);
      await store.putReplica({ digest: D2, nodeId: 'phoenix', complete: true, pieces: undefined, updatedAt: now }, now);
      assert.deepEqual(
        (await store.locate(D2, query)).map((c) => c.node.id),
        ['phoenix'],
      );
    } finally {
      await client.close();
      await store.dropAll();
      await store.close();
    }
  });
});

const unavailable = clusterUnavailable();

describe('on a real Redis Cluster of three masters', { skip: unavailable }, () => {
  let cluster: RedisCluster | undefined;
  const seeds = (): RedisCluster => {
    assert.ok(cluster, 'the cluster is up');
    return cluster;
  };
  before(async () => {
    cluster = await startRedisCluster(3);
  });
  after(async () => {
    await cluster?.stop();
  });

  contractSuite({
    name: 'redis',
    label: 'redis cluster',
    make: (tag) => new RedisStore({ url: seeds().url, prefix: `${prefix}-cl-${tag}` }),
  });

  it("spreads nodes' keys over every master, answers from them all, and cleans up every master", async () => {
    const { ports } = seeds();
    const tagged = `${prefix}-spread-${randomBytes(2).toString('hex')}`;
    // Two seeds, as a user lists them.
    const store = new RedisStore({
      url: `redis+cluster://127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}`,
      prefix: tagged,
    });
    assert.equal(store.clustered, true);
    const s = await startService(store);
    await ready(store);
    const ids = Array.from({ length: 30 }, (_, i) => `spread-${i}`);
    for (const [i, id] of ids.entries()) {
      assert.equal((await beat(s, id, { zone: i % 2 ? 'z1' : 'z2', freeUploadSlots: i })).status, 200);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}/replicas/${id}`, { complete: i % 3 !== 0 })).status, 200);
    }
    const peers = (await s.call('GET', `/v1/blobs/${D1}/peers?limit=50&zone=z1`)).body as {
      peers: Array<{ id: string; complete: boolean; zone: string }>;
    };
    assert.equal(peers.peers.length, 30);
    assert.equal(peers.peers.filter((p) => p.complete).length, 20);
    assert.ok(peers.peers.slice(0, 10).every((p) => p.complete && p.zone === 'z1'));
    assert.equal(((await s.call('GET', '/v1/nodes')).body as { nodes: unknown[] }).nodes.length, 30);

    for (const port of ports) {
      const keys = await keysOf(`redis://127.0.0.1:${port}`, `${tagged}:*`);
      assert.ok(
        keys.some((k) => k.includes('{node:')),
        `master on port ${port} holds node keys (of ${keys.length})`,
      );
    }
    assert.equal((await s.call('DELETE', `/v1/nodes/${ids[0]}`)).status, 204);
    await store.dropAll();
    for (const port of ports) assert.deepEqual(await keysOf(`redis://127.0.0.1:${port}`, `${tagged}:*`), []);
  });
});
