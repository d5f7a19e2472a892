// One contract, two stores: every behaviour of the control plane's API is checked against
// SQLite and against a real Redis server, through real HTTP on a loopback port.
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { createClient } from 'redis';
import { RedisStore } from '../../src/control-plane/redis-store.js';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { waitFor } from '../helpers/fixtures.js';
import { REDIS_URL } from '../helpers/redis.js';
import { beat, D1, D2, dir, factories, peerIds, PIECE, prefix, ready, startService, stopService } from './harness.js';
import { contractSuite, manifestOf } from './contract-cases.js';

for (const factory of factories) contractSuite(factory);

describe('control plane persistence and replicas', () => {
  it('keeps its data across a restart of the SQLite service', async () => {
    const path = join(dir, 'restart.db');
    const first = await startService(new SqliteStore(path), { nodeTtlMs: 60_000 });
    await beat(first, 'survivor');
    assert.equal((await first.call('PUT', `/v1/blobs/${D1}`, manifestOf(4, 4))).status, 201);
    await first.call('PUT', `/v1/blobs/${D1}/replicas/survivor`, { complete: true });
    await first.call('PUT', '/v1/sources', { key: 'https://o/x', digest: D1 });
    await stopService(first);

    const second = await startService(new SqliteStore(path), { nodeTtlMs: 60_000 });
    assert.deepEqual(
      ((await second.call('GET', `/v1/blobs/${D1}/peers`)).body as { peers: Array<{ id: string }> }).peers.map(
        (p) => p.id,
      ),
      ['survivor'],
    );
    assert.equal(
      ((await second.call('GET', `/v1/sources?key=${encodeURIComponent('https://o/x')}`)).body as { digest: string })
        .digest,
      D1,
    );
    assert.deepEqual((await second.call('GET', `/v1/blobs/${D1}`)).body, { digest: D1, ...manifestOf(4, 4) });
  });

  it('opens a SQLite file written before epochs, leases and verifiedAgainst, keeping its data', async () => {
    const path = join(dir, 'old-schema.db');
    const old = new Database(path);
    old.exec(`
      CREATE TABLE nodes (id TEXT PRIMARY KEY, url TEXT NOT NULL, zone TEXT, free_slots INTEGER NOT NULL,
        expires_at INTEGER NOT NULL);
      CREATE TABLE manifests (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, piece_size INTEGER NOT NULL,
        pieces TEXT NOT NULL);
      CREATE TABLE replicas (digest TEXT NOT NULL, node_id TEXT NOT NULL, complete INTEGER NOT NULL, pieces TEXT,
        updated_at INTEGER NOT NULL, PRIMARY KEY (digest, node_id));
    `);
    old
      .prepare('INSERT INTO nodes VALUES (?, ?, NULL, 1, ?)')
      .run('veteran', 'http://veteran:7071', Date.now() + 60_000);
    old.prepare('INSERT INTO manifests VALUES (?, 4, 4, ?)').run(D1, JSON.stringify([PIECE]));
    old.prepare('INSERT INTO replicas VALUES (?, ?, 1, NULL, ?)').run(D1, 'veteran', Date.now());
    old.close();
    const s = await startService(new SqliteStore(path));
    assert.deepEqual(await peerIds(s, D1), ['veteran']);
    assert.deepEqual((await s.call('GET', `/v1/blobs/${D1}`)).body, {
      digest: D1,
      ...manifestOf(4, 4, { verifiedAgainst: 'first-origin-fetch' }),
    });
    assert.equal((await s.call('POST', `/v1/blobs/${D1}/leases`, { node: 'veteran' })).status, 200);
  });

  it('keeps Redis keys under its prefix with hash tags, node records expiring by Redis TTL', async () => {
    const tagged = `${prefix}-layout`;
    // A TTL that outlasts the test on a loaded machine: the record must still be there to be read.
    const s = await startService(new RedisStore({ url: REDIS_URL, prefix: tagged }), { nodeTtlMs: 60_000 });
    await ready(s.store);
    await beat(s, 'ttl-node');
    await s.call('PUT', `/v1/blobs/${D1}/replicas/ttl-node`, { complete: true });
    const client = createClient({ url: REDIS_URL });
    await client.connect();
    try {
      const keys = [];
      for await (const batch of client.scanIterator({ MATCH: `${tagged}:*` })) keys.push(...(batch as string[]));
      // A node's keys share its own hash tag, a blob's its digest: nodes spread over a cluster's slots.
      assert.deepEqual(
        keys.map((k) => k.replace(/\{nodes:\d+\}/, '{nodes:N}')).sort(),
        [
          `${tagged}:{${D1}}:complete`,
          `${tagged}:{node:ttl-node}:holds`,
          `${tagged}:{nodes:N}:index`,
          `${tagged}:{node:ttl-node}:rec`,
        ].sort(),
      );
      const ttl = await client.pTTL(`${tagged}:{node:ttl-node}:rec`);
      assert.ok(ttl > 0 && ttl <= 60_000, `node key TTL ${ttl} ms`);
    } finally {
      await client.close();
    }
  });

  it("keeps no member of a blob's reports set for a node that holds no replica of it", async () => {
    const tagged = `${prefix}-ghosts`;
    const s = await startService(new RedisStore({ url: REDIS_URL, prefix: tagged }));
    await ready(s.store);
    await beat(s, 'holder');
    await s.call('PUT', `/v1/blobs/${D1}/replicas/holder`, { complete: true });
    const client = createClient({ url: REDIS_URL });
    await client.connect();
    try {
      const reportsKey = `${tagged}:{${D1}}:reports`;
      for (let i = 0; i < 50; i++) {
        const res = await s.call('POST', '/v1/reports', { digest: D1, node: `ghost-${i}`, reporter: 'r1' });
        assert.equal(res.status, 409);
      }
      assert.equal(await client.zCard(reportsKey), 0, 'no member per made-up node');
      assert.equal((await s.call('POST', '/v1/reports', { digest: D1, node: 'holder', reporter: 'r1' })).status, 202);
      assert.deepEqual(await client.zRange(reportsKey, 0, -1), ['holder\nr1']);
    } finally {
      await client.close();
    }
  });

  it('gives the same answers from two services on one Redis', async () => {
    const shared = `${prefix}-shared`;
    const a = await startService(new RedisStore({ url: REDIS_URL, prefix: shared }));
    const b = await startService(new RedisStore({ url: REDIS_URL, prefix: shared }));
    await ready(a.store);
    await ready(b.store);
    await beat(a, 'via-a', { zone: 'z1' });
    await beat(b, 'via-b', { zone: 'z2' });
    await a.call('PUT', `/v1/blobs/${D1}/replicas/via-a`, { complete: true });
    await b.call('PUT', `/v1/blobs/${D1}/replicas/via-b`, { complete: true });
    assert.equal((await a.call('PUT', `/v1/blobs/${D1}`, manifestOf(4, 4, { pieces: [D1] }))).status, 201);
    assert.equal((await b.call('PUT', `/v1/blobs/${D1}`, manifestOf(4, 4, { pieces: [D2] }))).status, 409);
    const fromA = (await a.call('GET', `/v1/blobs/${D1}/peers?zone=z2`)).body;
    const fromB = (await b.call('GET', `/v1/blobs/${D1}/peers?zone=z2`)).body;
    assert.deepEqual(fromA, fromB);
    assert.deepEqual(
      (fromA as { peers: Array<{ id: string }> }).peers.map((p) => p.id),
      ['via-b', 'via-a'],
    );
    assert.deepEqual((await a.call('GET', '/v1/nodes')).body, (await b.call('GET', '/v1/nodes')).body);
  });
});

describe('control plane housekeeping', () => {
  it('deletes lapsed nodes, their replicas, stale partials and old reports on a timer, with no request', async () => {
    const path = join(dir, 'sweep.db');
    // TTLs a loaded machine's stalls fit in before the first count; the rows' removal is then
    // waited for (polling the file, no request), not assumed done within half a second.
    const s = await startService(new SqliteStore(path), {
      nodeTtlMs: 5_000,
      partialTtlMs: 4_000,
      reportWindowMs: 5_000,
      sweepIntervalMs: 100,
    });
    await beat(s, 'gone');
    await s.call('PUT', `/v1/blobs/${D1}/replicas/gone`, { complete: true });
    await s.call('POST', '/v1/reports', { digest: D1, node: 'gone', reporter: 'r1' });
    const db = new Database(path, { readonly: true });
    try {
      const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
      assert.deepEqual([count('nodes'), count('replicas'), count('reports')], [1, 1, 1]);
      await sleep(5_000);
      await waitFor(
        'the sweep to delete the rows',
        () => count('nodes') + count('replicas') + count('reports') === 0,
        30_000,
      );
    } finally {
      db.close();
    }
  });

  it('drops the replicas of lapsed nodes and stale partial replicas from Redis on a timer, with no request', async () => {
    const tagged = `${prefix}-sweep`;
    // As above: TTLs a loaded machine's stalls fit in, and the sweep's removals waited for.
    const s = await startService(new RedisStore({ url: REDIS_URL, prefix: tagged }), {
      nodeTtlMs: 5_000,
      partialTtlMs: 4_000,
      sweepIntervalMs: 100,
    });
    await ready(s.store);
    await beat(s, 'gone');
    await s.call('PUT', `/v1/blobs/${D1}/replicas/gone`, { complete: true });
    const client = createClient({ url: REDIS_URL });
    await client.connect();
    try {
      const keys = async () => {
        const found: string[] = [];
        for await (const batch of client.scanIterator({ MATCH: `${tagged}:*` })) found.push(...(batch as string[]));
        return found.sort();
      };
      const shardless = async () => (await keys()).map((k) => k.replace(/\{nodes:\d+\}/, '{nodes:N}')).sort();
      // The record itself may already have lapsed by Redis TTL on a slow machine; the rest waits for the sweep.
      assert.deepEqual(
        (await shardless()).filter((k) => !k.endsWith(':rec')),
        [`${tagged}:{${D1}}:complete`, `${tagged}:{node:gone}:holds`, `${tagged}:{nodes:N}:index`],
      );
      await sleep(5_000);
      await waitFor('the sweep to drop every key', async () => (await keys()).length === 0, 30_000);

      // A live node's partial replica that is no longer updated goes; the node stays.
      const keep = setInterval(() => void beat(s, 'stays'), 300);
      try {
        await beat(s, 'stays');
        await s.call('PUT', `/v1/blobs/${D2}/replicas/stays`, { complete: false, pieces: [0] });
        assert.ok((await keys()).includes(`${tagged}:{${D2}}:partial`));
        await sleep(4_000);
        const left = [`${tagged}:{node:stays}:rec`, `${tagged}:{nodes:N}:index`];
        const now = await waitFor(
          'the sweep to drop the stale partial',
          async () => {
            const found = await shardless();
            return found.some((k) => k.endsWith(':partial')) ? false : found;
          },
          30_000,
        );
        assert.deepEqual(now, left);
      } finally {
        clearInterval(keep);
      }
    } finally {
      await client.close();
    }
  });
});
