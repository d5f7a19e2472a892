// The original tool's registry API on both stores: its README's lines work as written (curl
// -d sends a form content type with a JSON body), a node comes back exactly as registered,
// registrations last as long as the process unless an expiry is asked for, and its inputs
// are printable and bounded.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { errorOf, factories, service, type Service } from './harness.js';

/** What `curl -X POST URL -d '{...}'` sends: a JSON body labelled as a form. */
async function curlData(s: Service, path: string, data: string, contentType?: string) {
  const res = await fetch(`${s.url}${path}`, {
    method: 'POST',
    headers: contentType === undefined ? {} : { 'content-type': contentType },
    body: data,
  });
  return { status: res.status, body: (await res.json()) as unknown };
}

const nodesOf = async (s: Service, model: string) =>
  ((await s.call('GET', `/locate/${encodeURIComponent(model)}`)).body as { nodes: string[] }).nodes;

for (const factory of factories) {
  describe(`original tool's registry (${factory.name})`, () => {
    it('answers /locate with each node exactly as it was registered', async () => {
      const s = await service(factory);
      const res = await s.call('POST', '/register', { node: 'node1', model: 'llama-2-7b' });
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, { ok: true, node: 'node1', model: 'llama-2-7b', ttlSeconds: null });
      await s.call('POST', '/register', { node: 'http://10.0.0.5:8080', model: 'llama-2-7b' });
      await s.call('POST', '/register', { node: '10.0.0.6:8080', model: 'llama-2-7b' });
      assert.deepEqual((await nodesOf(s, 'llama-2-7b')).sort(), ['10.0.0.6:8080', 'http://10.0.0.5:8080', 'node1']);
      assert.deepEqual(await nodesOf(s, 'other'), []);
    });

    it("accepts the README's curl -d without a JSON content type", async () => {
      const s = await service(factory);
      const form = 'application/x-www-form-urlencoded';
      const res = await curlData(s, '/register', '{"node": "node1", "model": "llama-2-7b"}', form);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(await nodesOf(s, 'llama-2-7b'), ['node1']);
      assert.equal((await curlData(s, '/register', 'node=node2&model=llama-2-7b', form)).status, 200);
      assert.deepEqual((await nodesOf(s, 'llama-2-7b')).sort(), ['node1', 'node2']);
      const other = await curlData(s, '/register', '{"node":"n","model":"m"}', 'application/octet-stream');
      assert.equal(other.status, 415);
      assert.equal(errorOf(other).code, 'LOOM_ERR_VALIDATION');
      assert.match(errorOf(other).message, /-H 'Content-Type: application\/json'/);
    });

    it('keeps registrations for the life of the process by default, past the node TTL', async () => {
      const s = await service(factory, { nodeTtlMs: 300, sweepIntervalMs: 100 });
      await s.call('POST', '/register', { node: 'node1', model: 'm' });
      await sleep(700);
      assert.deepEqual(await nodesOf(s, 'm'), ['node1']);
    });

    it('lets registrations expire when an expiry is set, and a new /register renews them', async () => {
      // node1 lapses once the expiry has passed, however slow the machine; node2, renewed half
      // way, stays unless the second half is stalled by 2 s (by 400 ms with an expiry of 1 s).
      const s = await service(factory, { legacyTtlMs: 4_000 });
      const res = await s.call('POST', '/register', { node: 'node1', model: 'm' });
      assert.equal((res.body as { ttlSeconds: number }).ttlSeconds, 4);
      await s.call('POST', '/register', { node: 'node2', model: 'm' });
      await sleep(2_100);
      await s.call('POST', '/register', { node: 'node2', model: 'm' });
      await sleep(2_100);
      assert.deepEqual(await nodesOf(s, 'm'), ['node2']);
    });

    it('refuses control characters, empty and unbounded names, naming the field', async () => {
      const s = await service(factory);
      const cases: Array<[unknown, RegExp]> = [
        [{ node: 'node1', model: 'llama\n2' }, /invalid body\.model: must not contain control characters/],
        [{ node: '', model: 'm' }, /invalid body\.node: must not be empty/],
        [{ node: 'node\u0000', model: 'm' }, /invalid body\.node: must not contain control characters/],
        [{ node: 'a b', model: 'm' }, /invalid body\.node: must not contain spaces/],
        [{ node: 'n', model: 'm'.repeat(513) }, /invalid body\.model: must be at most 512/],
        [{ node: 'x' }, /invalid body\.model/],
      ];
      for (const [body, message] of cases) {
        const res = await s.call('POST', '/register', body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.match(errorOf(res).message, message);
      }
      const located = await s.call('GET', '/locate/bad%0Aname');
      assert.equal(located.status, 400);
      assert.match(errorOf(located).message, /invalid model: must not contain control characters/);
    });

    it('never lets a registration overwrite the agent of the same name', async () => {
      const s = await service(factory);
      await s.call('PUT', '/v1/nodes/node1', { url: 'http://node1.agent:7071' });
      await s.call('POST', '/register', { node: 'node1', model: 'm' });
      const nodes = (await s.call('GET', '/v1/nodes')).body as { nodes: Array<{ id: string; url: string }> };
      assert.deepEqual(
        nodes.nodes.filter((n) => n.id === 'node1').map((n) => n.url),
        ['http://node1.agent:7071'],
      );
    });
  });
}
