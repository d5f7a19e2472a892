// The control plane's contract as one suite, run against every store: SQLite and a real
// Redis server (contract.test.ts), a real Redis Cluster (redis-cluster.test.ts), through
// real HTTP on a loopback port.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { manifestFingerprint } from '../../src/core/manifest.js';
import { nodeToken } from '../../src/control-plane/auth.js';
import { beat, D1, D2, errorOf, peerIds, PIECE, service, type StoreFactory } from './harness.js';

export const manifestOf = (size: number, pieceSize: number, extra: Record<string, unknown> = {}) => ({
  size,
  pieceSize,
  pieces: Array.from({ length: Math.max(1, Math.ceil(size / pieceSize)) }, () => PIECE),
  verifiedAgainst: 'hub-sha256',
  ...extra,
});

export function contractSuite(factory: StoreFactory): void {
  describe(`control plane contract (${factory.label ?? factory.name})`, () => {
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
      // 'short' lapses once the TTL has passed, however slow the machine; 'kept' beats every
      // 500 ms, and stays as long as no beat comes 2.5 s late (a loaded machine stalls that long
      // rarely; a 350 ms margin it did not).
      const ttl = 3_000;
      const s = await service(factory, { nodeTtlMs: ttl });
      await beat(s, 'short');
      const shortBeat = Date.now();
      await beat(s, 'kept');
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}/replicas/short`, { complete: true })).status, 200);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}/replicas/kept`, { complete: true })).status, 200);
      while (Date.now() - shortBeat <= ttl + 100) {
        await sleep(500);
        await beat(s, 'kept');
      }
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

    it('locates each holder as its last heartbeat describes it, and forgets one that left', async () => {
      const s = await service(factory);
      await beat(s, 'mover', { zone: 'z1', freeUploadSlots: 1 });
      await beat(s, 'stayer', { zone: 'z1', freeUploadSlots: 5 });
      await beat(s, 'leaver', { zone: 'z1', freeUploadSlots: 9 });
      for (const id of ['mover', 'stayer', 'leaver'])
        assert.equal((await s.call('PUT', `/v1/blobs/${D1}/replicas/${id}`, { complete: true })).status, 200);
      assert.deepEqual(await peerIds(s, D1, '?zone=z1'), ['leaver', 'stayer', 'mover']);
      // A new address, zone and load, with the replica kept (same registration, no epoch).
      const moved = await beat(s, 'mover', { url: 'http://mover-2.test:7071', zone: 'z2', freeUploadSlots: 7 });
      assert.equal((moved.body as { resync: boolean }).resync, false);
      assert.equal((await s.call('DELETE', '/v1/nodes/leaver')).status, 204);
      const res = await s.call('GET', `/v1/blobs/${D1}/peers?zone=z2`);
      const peers = (res.body as { peers: Array<{ id: string; url: string; zone: string; freeUploadSlots: number }> })
        .peers;
      assert.deepEqual(
        peers.map((p) => [p.id, p.url, p.zone, p.freeUploadSlots]),
        [
          ['mover', 'http://mover-2.test:7071', 'z2', 7],
          ['stayer', 'http://stayer.test:7071', 'z1', 5],
        ],
      );
      // Back after leaving: a new registration that holds nothing until it announces again.
      assert.equal((await beat(s, 'leaver', { zone: 'z2', freeUploadSlots: 9 })).status, 200);
      assert.deepEqual(await peerIds(s, D1, '?zone=z2'), ['mover', 'stayer']);
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
      // A window a loaded machine's stalls fit in between the reports and the first look.
      const s = await service(factory, { reportWindowMs: 5_000 });
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
      await sleep(5_100);
      assert.deepEqual((await ids()).sort(), ['bad', 'good']);
    });

    it('refuses a replica report naming a node with no replica of the digest, and stores nothing', async () => {
      const s = await service(factory);
      await beat(s, 'holder');
      await s.call('PUT', `/v1/blobs/${D1}/replicas/holder`, { complete: true });
      await beat(s, 'elsewhere');
      await s.call('PUT', `/v1/blobs/${D2}/replicas/elsewhere`, { complete: true });
      const report = (node: string, reporter: string) =>
        s.call('POST', '/v1/reports', { digest: D1, node, reporter, reason: 'piece digest mismatch' });
      // Made-up ids, a live node holding another blob only: each from three reporters, the quarantine threshold.
      for (const node of ['ghost-1', 'ghost-2', 'elsewhere']) {
        for (const reporter of ['r1', 'r2', 'r3']) {
          const res = await report(node, reporter);
          assert.equal(res.status, 409, `${node} by ${reporter}: ${JSON.stringify(res.body)}`);
          assert.equal(errorOf(res).code, 'LOOM_ERR_CONFLICT');
          assert.match(
            errorOf(res).message,
            new RegExp(`node ${node} holds no replica of blob ${D1}.*nothing recorded`),
          );
        }
        assert.deepEqual(await s.store.reporters(D1, node, 0), [], `nothing stored against ${node}`);
      }
      // Nothing was counted: the holder's first report is its first, and the other blob's holder is still located.
      const first = await report('holder', 'r1');
      assert.equal(first.status, 202);
      assert.deepEqual(first.body, {
        digest: D1,
        kind: 'replica',
        node: 'holder',
        reporter: 'r1',
        reports: 1,
        quarantined: false,
      });
      assert.deepEqual(await peerIds(s, D2), ['elsewhere']);
      // The holder drops its copy (as a node does with bad bytes): reported within the window, it still collects reports.
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}/replicas/holder`)).status, 204);
      assert.equal(((await report('holder', 'r2')).body as { reports: number }).reports, 2);
      await s.call('PUT', `/v1/blobs/${D1}/replicas/holder`, { complete: true });
      assert.deepEqual(await peerIds(s, D1), ['holder']);
      const third = await report('holder', 'r3');
      assert.equal(third.status, 202);
      assert.deepEqual(
        [(third.body as { reports: number }).reports, (third.body as { quarantined: boolean }).quarantined],
        [3, true],
      );
      assert.deepEqual(await peerIds(s, D1), [], 'a real holder reported by three nodes is quarantined');
      assert.deepEqual(await s.store.reporters(D1, 'holder', 0), ['r1', 'r2', 'r3']);
    });

    it('drops a manifest reported by enough distinct nodes, and only that manifest', async () => {
      const s = await service(factory);
      const forged = manifestOf(8, 4, { verifiedAgainst: 'sha256-pinned' });
      const good = { ...forged, pieces: [D2, D2] };
      const report = (reporter: string, manifest = manifestFingerprint(forged)) =>
        s.call('POST', '/v1/reports', {
          digest: D1,
          kind: 'manifest',
          manifest,
          reporter,
          reason: 'whole file differs',
        });
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, forged)).status, 201);
      // One reporter, however often, is one report: the manifest stays.
      for (let i = 0; i < 3; i++) {
        const res = await report('liar');
        assert.equal(res.status, 202, JSON.stringify(res.body));
        assert.deepEqual(res.body, {
          digest: D1,
          kind: 'manifest',
          manifest: manifestFingerprint(forged),
          reporter: 'liar',
          reports: 1,
          dropped: false,
        });
      }
      // Reports against another piece list are not recorded (409): not against this one, and
      // not held for a list published later (3 of them would drop it on its first report).
      for (const reporter of ['x1', 'x2', 'x3']) {
        const other = await report(reporter, manifestFingerprint(good));
        assert.equal(other.status, 409, JSON.stringify(other.body));
        assert.match(errorOf(other).message, /is not the manifest of blob [0-9a-f]{64}.*nothing recorded/);
      }
      // Nor for a digest without a manifest: each would be kept for the window.
      const unknown = await s.call('POST', '/v1/reports', {
        digest: D2,
        kind: 'manifest',
        manifest: manifestFingerprint(forged),
        reporter: 'x4',
      });
      assert.equal(unknown.status, 409, JSON.stringify(unknown.body));
      assert.deepEqual((await s.call('GET', `/v1/blobs/${D1}`)).body, { digest: D1, ...forged });
      assert.equal(((await report('r2')).body as { reports: number }).reports, 2);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, good)).status, 409, 'still held below the threshold');
      const third = await report('r3');
      assert.deepEqual(
        [(third.body as { reports: number }).reports, (third.body as { dropped: boolean }).dropped],
        [3, true],
      );
      assert.equal((await s.call('GET', `/v1/blobs/${D1}`)).status, 404);
      // The node that fetched the pinned bytes publishes the good manifest in its place.
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, good)).status, 201);
      assert.deepEqual((await s.call('GET', `/v1/blobs/${D1}`)).body, { digest: D1, ...good });
      // x1-x3's earlier reports of it were not kept: one report does not drop it.
      const first = await report('x5', manifestFingerprint(good));
      assert.deepEqual(
        [(first.body as { reports: number }).reports, (first.body as { dropped: boolean }).dropped],
        [1, false],
      );
      // A late report against the dropped one never drops its successor.
      assert.equal(((await report('r4')).body as { dropped: boolean }).dropped, false);
      assert.deepEqual((await s.call('GET', `/v1/blobs/${D1}`)).body, { digest: D1, ...good });
      // The forged list published again is dropped by the next report: its reports still count.
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}`)).status, 204);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, forged)).status, 201);
      assert.equal(((await report('r5')).body as { dropped: boolean }).dropped, true);
      assert.equal((await s.call('GET', `/v1/blobs/${D1}`)).status, 404);
      // Replica reports are their own: the manifest's reports quarantine no node.
      await beat(s, 'holder');
      await s.call('PUT', `/v1/blobs/${D1}/replicas/holder`, { complete: true });
      assert.deepEqual(await peerIds(s, D1), ['holder']);
    });

    it('after a manifest is dropped on reports, only its reporters publish the next one until the reports age out', async () => {
      const SECRET = 'contract-secret-0123456789abcdef';
      const admin = { authorization: 'Bearer contract-admin-token-0123456789' };
      const s = await service(factory, {
        token: admin.authorization.slice(7),
        clusterSecret: SECRET,
        reportWindowMs: 1_500,
      });
      const as = (id: string) => ({ authorization: `Bearer ${nodeToken(SECRET, id)}`, 'x-loom-node': id });
      const forged = manifestOf(8, 4, { verifiedAgainst: 'sha256-pinned' });
      const good = { ...forged, pieces: [D2, D2] };
      const other = { ...forged, pieces: [PIECE, D2] };
      const put = (id: string, manifest: unknown) => s.call('PUT', `/v1/blobs/${D1}`, manifest, as(id));
      assert.equal((await put('forger', forged)).status, 201);
      for (const reporter of ['r1', 'r2', 'r3']) {
        const body = { digest: D1, kind: 'manifest', manifest: manifestFingerprint(forged) };
        assert.equal((await s.call('POST', '/v1/reports', body, as(reporter))).status, 202);
      }
      assert.equal((await s.call('GET', `/v1/blobs/${D1}`, undefined, admin)).status, 404, 'dropped');
      // The forger (not a reporter) cannot race the reporters with another list, nor its own again.
      for (const manifest of [other, forged]) {
        const res = await put('forger', manifest);
        assert.equal(res.status, 409, JSON.stringify(res.body));
        assert.match(errorOf(res).message, /dropped on nodes' reports/);
      }
      assert.equal((await put('r2', good)).status, 201, "a reporter publishes the pinned bytes' manifest");
      assert.equal((await put('r1', good)).status, 200, 'the same one again: unchanged');
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}`, undefined, admin)).status, 204);
      assert.equal((await put('forger', other)).status, 409, 'still within the window');
      await sleep(1_600);
      assert.equal((await put('forger', other)).status, 201, 'the reports aged out: first writer wins again');
    });

    it("a manifest's publisher reporting it counts for nothing: not toward its drop, nor as one who may publish next", async () => {
      const SECRET = 'contract-secret-0123456789abcdef';
      const admin = { authorization: 'Bearer contract-admin-token-0123456789' };
      const s = await service(factory, { token: admin.authorization.slice(7), clusterSecret: SECRET });
      const as = (id: string) => ({ authorization: `Bearer ${nodeToken(SECRET, id)}`, 'x-loom-node': id });
      const forged = manifestOf(8, 4, { verifiedAgainst: 'sha256-pinned' });
      const second = { ...forged, pieces: [PIECE, D2] };
      const report = (id: string) =>
        s.call('POST', '/v1/reports', { digest: D1, kind: 'manifest', manifest: manifestFingerprint(forged) }, as(id));
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, forged, as('forger'))).status, 201);
      const own = await report('forger');
      assert.equal(own.status, 202);
      assert.equal((own.body as { reports: number }).reports, 0, "the publisher's own report is not counted");
      for (const reporter of ['r1', 'r2'])
        assert.equal(((await report(reporter)).body as { dropped: boolean }).dropped, false);
      assert.equal(
        (await s.call('GET', `/v1/blobs/${D1}`, undefined, admin)).status,
        200,
        'two honest reports keep it',
      );
      const third = await report('r3');
      assert.deepEqual(
        [(third.body as { reports: number }).reports, (third.body as { dropped: boolean }).dropped],
        [3, true],
      );
      // Its report made before the drop, and one made after, make it no reporter: it cannot
      // race the honest reporters (fetching from the origin) with a second forged list.
      await report('forger');
      const res = await s.call('PUT', `/v1/blobs/${D1}`, second, as('forger'));
      assert.equal(res.status, 409, JSON.stringify(res.body));
      assert.match(errorOf(res).message, /dropped on nodes' reports/);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, second, as('r1'))).status, 201, 'a reporter publishes');
      assert.deepEqual((await s.call('GET', `/v1/blobs/${D1}`, undefined, admin)).body, { digest: D1, ...second });
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
      // A TTL a loaded machine's stalls fit in between the update and the first look.
      const s = await service(factory, { partialTtlMs: 4_000 });
      for (const id of ['partial', 'complete']) await beat(s, id);
      await s.call('PUT', `/v1/blobs/${D1}/replicas/partial`, { complete: false, pieces: [0, 1] });
      await s.call('PUT', `/v1/blobs/${D1}/replicas/complete`, { complete: true });
      assert.deepEqual(await peerIds(s, D1), ['complete', 'partial']);
      await sleep(4_300);
      assert.deepEqual(await peerIds(s, D1), ['complete']);
      await s.call('PUT', `/v1/blobs/${D1}/replicas/partial`, { complete: false, pieces: [0, 1, 2] });
      assert.deepEqual(await peerIds(s, D1), ['complete', 'partial'], 'an update brings it back');
    });

    it('a node that deregisters or lapses comes back holding nothing', async () => {
      // Long enough for the replicas to be recorded before 'lapser' lapses on a loaded machine.
      const s = await service(factory, { nodeTtlMs: 3_000 });
      await beat(s, 'leaver');
      await beat(s, 'lapser');
      await s.call('PUT', `/v1/blobs/${D1}/replicas/leaver`, { complete: true });
      await s.call('PUT', `/v1/blobs/${D1}/replicas/lapser`, { complete: true });
      assert.equal((await s.call('DELETE', '/v1/nodes/leaver')).status, 204);
      await sleep(3_300);
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
        ['POST', '/v1/reports', { digest: D1, reporter: 'y' }, /invalid body\.node: required in a replica report/],
        ['POST', '/v1/reports', { digest: D1, kind: 'manifest', reporter: 'y' }, /invalid body\.manifest: required/],
        [
          'POST',
          '/v1/reports',
          { digest: D1, kind: 'manifest', manifest: 'zz', reporter: 'y' },
          /invalid body\.manifest/,
        ],
        [
          'POST',
          '/v1/reports',
          { digest: D1, kind: 'manifest', manifest: D2, node: 'x', reporter: 'y' },
          /invalid body\.node: not part of a manifest report/,
        ],
        [
          'POST',
          '/v1/reports',
          { digest: D1, node: 'x', manifest: D2, reporter: 'y' },
          /invalid body\.manifest: not part/,
        ],
        ['POST', '/v1/reports', { digest: D1, kind: 'blob', manifest: D2, reporter: 'y' }, /invalid body\.kind/],
        [
          'POST',
          '/v1/reports',
          { digest: 'nope', kind: 'manifest', manifest: D2, reporter: 'y' },
          /invalid body\.digest/,
        ],
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
