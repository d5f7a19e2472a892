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
import { REDIS_URL } from '../helpers/redis.js';
import {
  beat,
  D1,
  D2,
  dir,
  errorOf,
  factories,
  peerIds,
  PIECE,
  prefix,
  ready,
  service,
  startService,
  stopService,
} from './harness.js';

const manifestOf = (size: number, pieceSize: number, extra: Record<string, unknown> = {}) => ({
  size,
  pieceSize,
  pieces: Array.from({ length: Math.max(1, Math.ceil(size / pieceSize)) }, () => PIECE),
  verifiedAgainst: 'hub-sha256',
  ...extra,
});

for (const factory of factories) {
  describe(`control plane contract (${factory.name})`, () => {
    it('registers nodes by heartbeat and tells the TTL and interval', async () => {
      const s = await service(factory);
      const res = await beat(s, 'node-1', { zone: 'z1', freeUploadSlots: 4 });
      assert.equal(res.status, 200);
      const body = res.body as { ttlSeconds: number; heartbeatIntervalSeconds: number };
      assert.equal(body.ttlSeconds, 30);
      assert.equal(body.heartbeatIntervalSeconds, 10);
      const nodes = (await s.call('GET', '/v1/nodes')).body as {
        nodes: Array<{ id: string; zone: string; freeUploadSlots: number }>;
      };
      assert.deepEqual(
        nodes.nodes.map((n) => [n.id, n.zone, n.freeUploadSlots]),
        [['node-1', 'z1', 4]],
      );
      assert.equal((await s.call('DELETE', '/v1/nodes/node-1')).status, 204);
      assert.deepEqual(((await s.call('GET', '/v1/nodes')).body as { nodes: unknown[] }).nodes, []);
      assert.equal((await s.call('DELETE', '/v1/nodes/node-1')).status, 404);
    });

    it('forgets a node that misses its heartbeats, in every answer', async () => {
      const s = await service(factory, { nodeTtlMs: 800 });
      await beat(s, 'short');
      await beat(s, 'kept');
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}/replicas/short`, { complete: true })).status, 200);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}/replicas/kept`, { complete: true })).status, 200);
      await sleep(450);
      await beat(s, 'kept');
      await sleep(450);
      const nodes = ((await s.call('GET', '/v1/nodes')).body as { nodes: Array<{ id: string }> }).nodes.map(
        (n) => n.id,
      );
      assert.deepEqual(nodes, ['kept']);
      const peers = ((await s.call('GET', `/v1/blobs/${D1}/peers`)).body as { peers: Array<{ id: string }> }).peers;
      assert.deepEqual(
        peers.map((p) => p.id),
        ['kept'],
      );
    });

    it('locates complete before partial, same zone first but not only, least loaded first, never the asker', async () => {
      const s = await service(factory);
      const nodes: Array<[string, string, number, boolean]> = [
        ['z1-complete-busy', 'z1', 1, true],
        ['z1-complete-idle', 'z1', 9, true],
        ['z1-partial', 'z1', 20, false],
        ['z2-complete', 'z2', 50, true],
        ['z2-partial', 'z2', 50, false],
        ['asker', 'z1', 99, true],
      ];
      for (const [id, zone, slots, complete] of nodes) {
        await beat(s, id, { zone, freeUploadSlots: slots });
        const res = await s.call(
          'PUT',
          `/v1/blobs/${D1}/replicas/${id}`,
          complete ? { complete } : { complete, pieces: [0, 2] },
        );
        assert.equal(res.status, 200);
      }
      const res = await s.call('GET', `/v1/blobs/${D1}/peers?node=asker&zone=z1`);
      assert.equal(res.status, 200);
      const peers = (res.body as { peers: Array<{ id: string; pieces: number[] | null; url: string }> }).peers;
      assert.deepEqual(
        peers.map((p) => p.id),
        ['z1-complete-idle', 'z1-complete-busy', 'z2-complete', 'z1-partial', 'z2-partial'],
      );
      assert.deepEqual(peers[3]!.pieces, [0, 2]);
      assert.equal(peers[0]!.url, 'http://z1-complete-idle.test:7071');
      const limited = (await s.call('GET', `/v1/blobs/${D1}/peers?node=asker&zone=z1&limit=2`)).body as {
        peers: unknown[];
      };
      assert.equal(limited.peers.length, 2);
      assert.deepEqual(((await s.call('GET', `/v1/blobs/${D2}/peers`)).body as { peers: unknown[] }).peers, []);
    });

    it('shuffles holders that rank equal, so a fleet spreads over them', async () => {
      const s = await service(factory);
      for (let i = 0; i < 10; i++) {
        await beat(s, `eq-${i}`, { freeUploadSlots: 3 });
        await s.call('PUT', `/v1/blobs/${D1}/replicas/eq-${i}`, { complete: true });
      }
      const firsts = new Set<string>();
      for (let i = 0; i < 30; i++) {
        const peers = ((await s.call('GET', `/v1/blobs/${D1}/peers`)).body as { peers: Array<{ id: string }> }).peers;
        assert.equal(peers.length, 8, 'at most 8 peers by default');
        firsts.add(peers[0]!.id);
      }
      assert.ok(firsts.size >= 3, `first peer varied over ${firsts.size} nodes`);
    });

    it('keeps the first manifest and refuses a conflicting one', async () => {
      const s = await service(factory);
      const manifest = { size: 10, pieceSize: 4, pieces: [D1, D2, D1], verifiedAgainst: 'sha256-pinned' };
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, manifest)).status, 201);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, manifest)).status, 200);
      const conflict = await s.call('PUT', `/v1/blobs/${D1}`, { ...manifest, pieces: [D2, D2, D2] });
      assert.equal(conflict.status, 409);
      assert.equal((conflict.body as { error: { code: string } }).error.code, 'LOOM_ERR_CONFLICT');
      assert.deepEqual((await s.call('GET', `/v1/blobs/${D1}`)).body, { digest: D1, ...manifest });
      assert.equal((await s.call('GET', `/v1/blobs/${D2}`)).status, 404);
    });

    it('withdraws a replica', async () => {
      const s = await service(factory);
      await beat(s, 'holder');
      await s.call('PUT', `/v1/blobs/${D1}/replicas/holder`, { complete: true });
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}/replicas/holder`)).status, 204);
      assert.deepEqual(((await s.call('GET', `/v1/blobs/${D1}/peers`)).body as { peers: unknown[] }).peers, []);
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}/replicas/holder`)).status, 404);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}/replicas/ghost`, { complete: true })).status, 404);
    });

    it('maps source keys to digests, presigned variants to one key', async () => {
      const s = await service(factory);
      const signed = 'https://bucket.example/m.bin?X-Amz-Signature=abc&X-Amz-Date=1';
      assert.equal((await s.call('PUT', '/v1/sources', { key: signed, digest: D1 })).status, 200);
      const other = encodeURIComponent('https://bucket.example/m.bin?X-Amz-Signature=zzz');
      assert.deepEqual((await s.call('GET', `/v1/sources?key=${other}`)).body, {
        key: 'https://bucket.example/m.bin',
        digest: D1,
      });
      assert.equal(
        (await s.call('PUT', '/v1/sources', { key: 'hf://org/model/weights.safetensors', digest: D2 })).status,
        200,
      );
      assert.equal(
        (
          (await s.call('GET', `/v1/sources?key=${encodeURIComponent('hf://org/model/weights.safetensors')}`)).body as {
            digest: string;
          }
        ).digest,
        D2,
      );
      assert.equal((await s.call('GET', `/v1/sources?key=${encodeURIComponent('s3://b/none')}`)).status, 404);
    });

    it('keeps a repeatedly reported replica out of locate answers for a while', async () => {
      const s = await service(factory, { reportWindowMs: 1_500 });
      for (const id of ['bad', 'good']) {
        await beat(s, id);
        await s.call('PUT', `/v1/blobs/${D1}/replicas/${id}`, { complete: true });
      }
      for (const reporter of ['r1', 'r2', 'r3']) {
        const res = await s.call('POST', '/v1/reports', {
          digest: D1,
          node: 'bad',
          reporter,
          reason: 'piece digest mismatch',
        });
        assert.equal(res.status, 202);
      }
      const ids = async () =>
        ((await s.call('GET', `/v1/blobs/${D1}/peers`)).body as { peers: Array<{ id: string }> }).peers.map(
          (p) => p.id,
        );
      assert.deepEqual(await ids(), ['good']);
      await sleep(1_600);
      assert.deepEqual((await ids()).sort(), ['bad', 'good']);
    });

    it('drops the replicas a node recorded under an older epoch when it beats with a new one', async () => {
      const s = await service(factory);
      await beat(s, 'booted', { epoch: 'boot-1' });
      await beat(s, 'other', { epoch: 'x' });
      for (const node of ['booted', 'other']) {
        assert.equal((await s.call('PUT', `/v1/blobs/${D1}/replicas/${node}`, { complete: true })).status, 200);
      }
      const same = await beat(s, 'booted', { epoch: 'boot-1' });
      assert.equal((same.body as { resync: boolean }).resync, false);
      await beat(s, 'booted');
      assert.deepEqual((await peerIds(s, D1)).sort(), ['booted', 'other'], 'a beat without epoch keeps the epoch');
      const restarted = await beat(s, 'booted', { epoch: 'boot-2' });
      assert.equal((restarted.body as { resync: boolean }).resync, true);
      assert.deepEqual(await peerIds(s, D1), ['other']);
      await s.call('PUT', `/v1/blobs/${D2}/replicas/booted`, { complete: false, pieces: [0] });
      await beat(s, 'booted', { epoch: 'boot-2' });
      assert.deepEqual(await peerIds(s, D2), ['booted'], 'replicas of the current epoch stay');
    });

    it('leaves a partial replica out once it has gone without an update for the partial TTL', async () => {
      const s = await service(factory, { partialTtlMs: 1_000 });
      for (const id of ['partial', 'complete']) await beat(s, id);
      await s.call('PUT', `/v1/blobs/${D1}/replicas/partial`, { complete: false, pieces: [0, 1] });
      await s.call('PUT', `/v1/blobs/${D1}/replicas/complete`, { complete: true });
      assert.deepEqual(await peerIds(s, D1), ['complete', 'partial']);
      await sleep(1_300);
      assert.deepEqual(await peerIds(s, D1), ['complete']);
      await s.call('PUT', `/v1/blobs/${D1}/replicas/partial`, { complete: false, pieces: [0, 1, 2] });
      assert.deepEqual(await peerIds(s, D1), ['complete', 'partial'], 'an update brings it back');
    });

    it('a node that deregisters or lapses comes back holding nothing', async () => {
      const s = await service(factory, { nodeTtlMs: 1_000 });
      await beat(s, 'leaver');
      await beat(s, 'lapser');
      await s.call('PUT', `/v1/blobs/${D1}/replicas/leaver`, { complete: true });
      await s.call('PUT', `/v1/blobs/${D1}/replicas/lapser`, { complete: true });
      assert.equal((await s.call('DELETE', '/v1/nodes/leaver')).status, 204);
      await sleep(1_300);
      const back = await beat(s, 'leaver');
      assert.equal((back.body as { resync: boolean }).resync, true);
      assert.equal((await beat(s, 'lapser')).status, 200);
      assert.deepEqual(await peerIds(s, D1), []);
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}/replicas/leaver`)).status, 404);
    });

    it('accepts the manifest of a 100 GB blob and of a blob of 1,024 pieces, past the default body limit', async () => {
      const s = await service(factory);
      const big = manifestOf(100e9, 128 * 1024 * 1024);
      assert.equal(big.pieces.length, 746);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, big)).status, 201);
      const largest = manifestOf(1024 * 16 * 1024 * 1024, 16 * 1024 * 1024, { verifiedAgainst: 'first-origin-fetch' });
      assert.ok(JSON.stringify(largest).length > 64 * 1024);
      assert.equal((await s.call('PUT', `/v1/blobs/${D2}`, largest)).status, 201);
      const stored = (await s.call('GET', `/v1/blobs/${D2}`)).body as { pieces: string[]; verifiedAgainst: string };
      assert.equal(stored.pieces.length, 1024);
      assert.equal(stored.verifiedAgainst, 'first-origin-fetch');
    });

    it('removes a manifest by DELETE, after which another can be published', async () => {
      const s = await service(factory);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, manifestOf(8, 4))).status, 201);
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}`)).status, 204);
      assert.equal((await s.call('GET', `/v1/blobs/${D1}`)).status, 404);
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}`)).status, 404);
      const fixed = manifestOf(8, 4, { pieces: [D2, D2] });
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, fixed)).status, 201);
      assert.deepEqual((await s.call('GET', `/v1/blobs/${D1}`)).body, { digest: D1, ...fixed });
    });

    it('does not silently repoint a source mapped to another digest', async () => {
      const s = await service(factory);
      const key = 'https://bucket.example/model.bin';
      assert.equal((await s.call('PUT', '/v1/sources', { key, digest: D1 })).status, 200);
      assert.equal((await s.call('PUT', '/v1/sources', { key, digest: D1 })).status, 200, 'the same mapping again');
      const conflict = await s.call('PUT', '/v1/sources', { key, digest: D2 });
      assert.equal(conflict.status, 409);
      assert.match(errorOf(conflict).message, new RegExp(`already mapped to ${D1}`));
      const get = async () =>
        ((await s.call('GET', `/v1/sources?key=${encodeURIComponent(key)}`)).body as { digest: string }).digest;
      assert.equal(await get(), D1);
      const replaced = await s.call('PUT', '/v1/sources', { key, digest: D2, replace: true });
      assert.equal(replaced.status, 200);
      assert.equal((replaced.body as { outcome: string }).outcome, 'replaced');
      assert.equal(await get(), D2);
    });

    it('answers at most limit holders out of many, complete ones first', async () => {
      const s = await service(factory);
      for (let i = 0; i < 90; i++) {
        const id = `many-${String(i).padStart(2, '0')}`;
        await beat(s, id, { freeUploadSlots: i % 5 });
        await s.call('PUT', `/v1/blobs/${D1}/replicas/${id}`, i % 10 === 0 ? { complete: true } : { complete: false });
      }
      const res = await s.call('GET', `/v1/blobs/${D1}/peers?limit=12`);
      const peers = (res.body as { peers: Array<{ id: string; complete: boolean }> }).peers;
      assert.equal(peers.length, 12);
      assert.deepEqual(
        peers.map((p) => p.complete),
        [...Array<boolean>(9).fill(true), ...Array<boolean>(3).fill(false)],
      );
    });

    it('answers every invalid input with 400 naming the field, and changes nothing', async () => {
      const s = await service(factory);
      const cases: Array<[string, string, unknown, RegExp]> = [
        ['PUT', '/v1/nodes/bad%20id', { url: 'http://x:1' }, /invalid id/],
        ['PUT', `/v1/nodes/${'n'.repeat(129)}`, { url: 'http://x:1' }, /invalid id: must be at most 128/],
        ['PUT', '/v1/nodes/ok', { url: 'ftp://x' }, /invalid body\.url/],
        ['PUT', '/v1/nodes/ok', { url: 'http://x:1', freeUploadSlots: -1 }, /invalid body\.freeUploadSlots/],
        ['PUT', '/v1/nodes/ok', { url: 'http://x:1', extra: 1 }, /invalid body/],
        ['PUT', '/v1/nodes/ok', '{not json', /JSON|json/],
        ['PUT', '/v1/blobs/xyz', { size: 1, pieceSize: 1, pieces: [D1] }, /invalid digest/],
        ['PUT', `/v1/blobs/${D1}`, manifestOf(10, 4, { pieces: [D1] }), /invalid body\.pieces/],
        ['PUT', `/v1/blobs/${D1}`, manifestOf(4, 4, { pieces: ['zz'] }), /invalid body\.pieces\.0/],
        ['PUT', `/v1/blobs/${D1}`, manifestOf(4, 4, { verifiedAgainst: 'peer' }), /invalid body\.verifiedAgainst/],
        ['PUT', `/v1/blobs/${D1}`, { size: 4, pieceSize: 4, pieces: [D1] }, /invalid body\.verifiedAgainst/],
        ['PUT', `/v1/blobs/${D1}`, manifestOf(1025, 1), /invalid body\.pieces: must hold at most 1024/],
        ['PUT', '/v1/nodes/ok', { url: 'http://x:1', epoch: 'a b' }, /invalid body\.epoch/],
        ['PUT', '/v1/nodes/ok', { url: 'http://x:1', epoch: 'e'.repeat(129) }, /invalid body\.epoch/],
        ['PUT', '/v1/nodes/', { url: 'http://x:1' }, /invalid id: must not be empty/],
        ['POST', '/v1/reports', { digest: D1, node: 'x', reporter: 'y', reason: 'bad\npiece' }, /invalid body\.reason/],
        ['POST', `/v1/blobs/${D1}/leases`, { node: 'n', slots: 0 }, /invalid body\.slots/],
        ['POST', `/v1/blobs/${D1}/leases`, {}, /invalid body\.node/],
        ['PUT', `/v1/blobs/${D1}/leases/nothex`, undefined, /invalid token/],
        ['PUT', `/v1/blobs/${D1}/replicas/ok`, { complete: 'yes' }, /invalid body\.complete/],
        ['PUT', '/v1/sources', { key: 'file:///etc/passwd', digest: D1 }, /invalid body\.key/],
        ['PUT', '/v1/sources', { key: 'https://x/y', digest: 'ABC' }, /invalid body\.digest/],
        ['GET', `/v1/blobs/${D1}/peers?limit=0`, undefined, /invalid query\.limit/],
        ['GET', `/v1/blobs/${D1}/peers?limit=abc`, undefined, /invalid query\.limit/],
        ['GET', `/v1/blobs/${D1}/peers?node=a%20b`, undefined, /invalid query\.node/],
        ['GET', '/v1/sources', undefined, /invalid query\.key/],
        ['POST', '/v1/reports', { digest: D1, node: 'x' }, /invalid body\.reporter/],
        ['POST', '/register', { node: 'x' }, /invalid body\.model/],
        ['PUT', '/v1/nodes/ok', { url: `http://x:1/${'p'.repeat(70 * 1024)}` }, /larger than 65536 bytes/],
      ];
      for (const [method, path, body, message] of cases) {
        const res = await s.call(method, path, body);
        assert.equal(res.status, 400, `${method} ${path}: ${JSON.stringify(res.body)}`);
        const error = (res.body as { error: { code: string; message: string } }).error;
        assert.equal(error.code, 'LOOM_ERR_VALIDATION');
        assert.match(error.message, message, `${method} ${path}`);
      }
      assert.deepEqual(((await s.call('GET', '/v1/nodes')).body as { nodes: unknown[] }).nodes, []);
      assert.equal((await s.call('GET', `/v1/blobs/${D1}`)).status, 404);
    });

    it('serves health, readiness and Prometheus metrics', async () => {
      const s = await service(factory);
      await beat(s, 'm1');
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, manifestOf(4, 4))).status, 201);
      await s.call('PUT', `/v1/blobs/${D1}/replicas/m1`, { complete: true });
      await s.call('GET', `/v1/blobs/${D1}/peers`);
      assert.deepEqual((await s.call('GET', '/healthz')).body, { ok: true });
      assert.deepEqual((await s.call('GET', '/readyz')).body, { ok: true, store: factory.name });
      const res = await fetch(`${s.url}/metrics`);
      const text = await res.text();
      assert.equal(res.status, 200);
      assert.match(
        text,
        /loom_cp_http_requests_total\{route="\/v1\/blobs\/:digest\/peers",method="GET",status="200"\} 1/,
      );
      assert.match(
        text,
        /loom_cp_http_request_duration_seconds_bucket\{le="\+Inf",route="\/v1\/nodes\/:id",method="PUT"\} 1/,
      );
      assert.match(text, /loom_cp_live_nodes 1/);
      assert.match(text, /loom_cp_blobs 1/);
      assert.match(text, /loom_cp_replicas 1/);
    });

    it('requires the bearer token for writes, and for reads unless they are open', async () => {
      const token = 'x'.repeat(40);
      const closed = await service(factory, { token });
      const auth = { authorization: `Bearer ${token}` };
      assert.equal((await beat(closed, 'n1')).status, 401);
      assert.equal(
        (await closed.call('PUT', '/v1/nodes/n1', { url: 'http://n1:1' }, { authorization: 'Bearer wrong' })).status,
        401,
      );
      assert.equal((await closed.call('PUT', '/v1/nodes/n1', { url: 'http://n1:1' }, auth)).status, 200);
      assert.equal((await closed.call('GET', '/v1/nodes')).status, 401);
      assert.equal((await closed.call('GET', '/v1/nodes', undefined, auth)).status, 200);
      assert.equal((await closed.call('GET', '/healthz')).status, 200);
      const open = await service(factory, { token, openReads: true });
      assert.equal((await open.call('GET', '/v1/nodes')).status, 200);
      assert.equal((await beat(open, 'n2')).status, 401);
      const unauthorized = await open.call('POST', '/register', { node: 'a', model: 'b' });
      assert.equal(unauthorized.status, 401);
      assert.equal((unauthorized.body as { error: { code: string } }).error.code, 'LOOM_ERR_UNAUTHORIZED');
    });
  });
}

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
    const s = await startService(new RedisStore({ url: REDIS_URL, prefix: tagged }), { nodeTtlMs: 5_000 });
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
      assert.ok(ttl > 0 && ttl <= 5_000, `node key TTL ${ttl} ms`);
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
    const s = await startService(new SqliteStore(path), {
      nodeTtlMs: 2_500,
      partialTtlMs: 2_000,
      reportWindowMs: 2_500,
      sweepIntervalMs: 100,
    });
    await beat(s, 'gone');
    await s.call('PUT', `/v1/blobs/${D1}/replicas/gone`, { complete: true });
    await s.call('POST', '/v1/reports', { digest: D1, node: 'gone', reporter: 'r1' });
    const db = new Database(path, { readonly: true });
    try {
      const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
      assert.deepEqual([count('nodes'), count('replicas'), count('reports')], [1, 1, 1]);
      await sleep(3_000);
      assert.deepEqual([count('nodes'), count('replicas'), count('reports')], [0, 0, 0]);
    } finally {
      db.close();
    }
  });

  it('drops the replicas of lapsed nodes and stale partial replicas from Redis on a timer, with no request', async () => {
    const tagged = `${prefix}-sweep`;
    const s = await startService(new RedisStore({ url: REDIS_URL, prefix: tagged }), {
      nodeTtlMs: 2_500,
      partialTtlMs: 2_000,
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
      assert.deepEqual(await shardless(), [
        `${tagged}:{${D1}}:complete`,
        `${tagged}:{node:gone}:holds`,
        `${tagged}:{node:gone}:rec`,
        `${tagged}:{nodes:N}:index`,
      ]);
      await sleep(3_000);
      assert.deepEqual(await keys(), []);

      // A live node's partial replica that is no longer updated goes; the node stays.
      const keep = setInterval(() => void beat(s, 'stays'), 300);
      try {
        await beat(s, 'stays');
        await s.call('PUT', `/v1/blobs/${D2}/replicas/stays`, { complete: false, pieces: [0] });
        assert.ok((await keys()).includes(`${tagged}:{${D2}}:partial`));
        await sleep(3_000);
        assert.deepEqual(await shardless(), [`${tagged}:{node:stays}:rec`, `${tagged}:{nodes:N}:index`]);
      } finally {
        clearInterval(keep);
      }
    } finally {
      await client.close();
    }
  });
});
