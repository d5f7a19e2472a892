// Leases on fetching a blob from its origin, on both stores: N slots, a TTL, renewal,
// release, fencing tokens that increase with every grant, and only the holder acting on it.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { nodeToken } from '../../src/index.js';
import { D1, D2, errorOf, factories, service, type Reply, type Service } from './harness.js';

interface Granted {
  granted: true;
  token: string;
  node: string;
  fencingToken: number;
  expiresAt: number;
  ttlSeconds: number;
}
interface Refused {
  granted: false;
  holders: Array<{ node: string; fencingToken: number; expiresAt: number }>;
}

const take = async (s: Service, node: string, extra: Record<string, unknown> = {}, digest = D1) =>
  (await s.call('POST', `/v1/blobs/${digest}/leases`, { node, ...extra })).body as Granted | Refused;

function granted(grant: Granted | Refused): Granted {
  assert.equal(grant.granted, true, JSON.stringify(grant));
  return grant as Granted;
}

for (const factory of factories) {
  describe(`control plane leases (${factory.name})`, () => {
    it('grants one slot by default, tells the others who holds it, and gives the holder the same lease again', async () => {
      const s = await service(factory);
      const before = Date.now();
      const first = granted(await take(s, 'node-a'));
      assert.match(first.token, /^[0-9a-f]{32}$/);
      assert.equal(first.node, 'node-a');
      assert.equal(first.ttlSeconds, 5);
      assert.ok(first.expiresAt >= before + 5_000 && first.expiresAt <= Date.now() + 5_000);
      const refused = (await take(s, 'node-b')) as Refused;
      assert.equal(refused.granted, false);
      assert.deepEqual(
        refused.holders.map((h) => [h.node, h.fencingToken]),
        [['node-a', first.fencingToken]],
      );
      assert.equal('token' in refused.holders[0]!, false, 'holders never reveal tokens');
      const again = granted(await take(s, 'node-a'));
      assert.deepEqual([again.token, again.fencingToken], [first.token, first.fencingToken]);
      granted(await take(s, 'node-b', {}, D2));
    });

    it('grants up to N slots, each with a larger fencing token', async () => {
      const s = await service(factory);
      const grants = [granted(await take(s, 'n1', { slots: 3 }))];
      grants.push(granted(await take(s, 'n2', { slots: 3 })));
      grants.push(granted(await take(s, 'n3', { slots: 3 })));
      const fencing = grants.map((g) => g.fencingToken);
      assert.deepEqual(
        fencing,
        [...fencing].sort((a, b) => a - b),
      );
      assert.equal(new Set(fencing).size, 3);
      const full = (await take(s, 'n4', { slots: 3 })) as Refused;
      assert.equal(full.granted, false);
      assert.deepEqual(full.holders.map((h) => h.node).sort(), ['n1', 'n2', 'n3']);
    });

    it('lets a lease lapse after its TTL, unless renewed, and hands it on with a larger fencing token', async () => {
      // Renewed every 600 ms under a 4 s TTL: a renewal a loaded machine delays by 3 s still
      // comes in time (under 1.5 s, one delayed by a second lapsed the lease).
      const s = await service(factory, { leaseTtlMs: 4_000 });
      const a = granted(await take(s, 'node-a'));
      for (let i = 0; i < 8; i++) {
        await sleep(600);
        const renewed = await s.call('PUT', `/v1/blobs/${D1}/leases/${a.token}`);
        assert.equal(renewed.status, 200);
        assert.equal((renewed.body as Granted).fencingToken, a.fencingToken);
      }
      assert.equal(((await take(s, 'node-b')) as Refused).granted, false, 'renewed past its first TTL');
      await sleep(4_300);
      const b = granted(await take(s, 'node-b'));
      assert.ok(b.fencingToken > a.fencingToken, `${b.fencingToken} > ${a.fencingToken}`);
      const late: Reply = await s.call('PUT', `/v1/blobs/${D1}/leases/${a.token}`);
      assert.equal(late.status, 404);
      assert.match(errorOf(late).message, /lapsed or was released/);
    });

    it('frees the slot at once when the holder releases it', async () => {
      const s = await service(factory);
      const a = granted(await take(s, 'node-a'));
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}/leases/${a.token}`)).status, 204);
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}/leases/${a.token}`)).status, 404);
      const b = granted(await take(s, 'node-b'));
      assert.ok(b.fencingToken > a.fencingToken);
    });

    it('lets only the holder renew or release its lease, and a node take one only for itself', async () => {
      const secret = 'lease-secret-0123456789abcdef';
      const s = await service(factory, { clusterSecret: secret });
      const as = (id: string) => ({ authorization: `Bearer ${nodeToken(secret, id)}`, 'x-loom-node': id });
      const forged = await s.call('POST', `/v1/blobs/${D1}/leases`, { node: 'node-b' }, as('node-a'));
      assert.equal(forged.status, 403);
      const res = await s.call('POST', `/v1/blobs/${D1}/leases`, { node: 'node-a' }, as('node-a'));
      const a = granted(res.body as Granted);
      const path = `/v1/blobs/${D1}/leases/${a.token}`;
      assert.equal((await s.call('PUT', path, undefined, as('node-b'))).status, 403);
      assert.equal((await s.call('DELETE', path, undefined, as('node-b'))).status, 403);
      assert.equal((await s.call('PUT', path, undefined, as('node-a'))).status, 200);
      assert.equal((await s.call('DELETE', path, undefined, as('node-a'))).status, 204);
    });
  });
}
