// Per-node credentials, on both stores: with a cluster secret each node holds a token bound
// to its id and can speak only for itself; the admin token can do everything; reports count
// distinct authenticated reporters, not names in a body.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { nodeToken } from '../../src/index.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { beat, D1, D2, errorOf, factories, peerIds, PIECE, service, type Service } from './harness.js';

const SECRET = 'cluster-secret-for-tests-0123456789';
const ADMIN = 'admin-token-for-tests-0123456789';
const admin = { authorization: `Bearer ${ADMIN}` };
/** What a node sends: its own token and its id. */
const as = (id: string, token = nodeToken(SECRET, id)) => ({ authorization: `Bearer ${token}`, 'x-loom-node': id });

describe('node tokens', () => {
  it('are hex(HMAC-SHA256(secret, "loom-node:" + id))', () => {
    const expected = createHmac('sha256', SECRET).update('loom-node:node-a').digest('hex');
    assert.equal(nodeToken(SECRET, 'node-a'), expected);
    assert.match(expected, /^[0-9a-f]{64}$/);
    assert.notEqual(nodeToken(SECRET, 'node-b'), expected);
  });
});

for (const factory of factories) {
  describe(`control plane credentials (${factory.name})`, () => {
    const secured = (): Promise<Service> => service(factory, { token: ADMIN, clusterSecret: SECRET });

    it('authenticates a node by its token, from its header or from the route, and only as itself', async () => {
      const s = await secured();
      assert.equal((await beat(s, 'node-a', {}, as('node-a'))).status, 200);
      const pathOnly = { authorization: `Bearer ${nodeToken(SECRET, 'node-b')}` };
      assert.equal((await beat(s, 'node-b', {}, pathOnly)).status, 200, 'the route names the node');

      const forged = await beat(s, 'node-b', { url: 'http://evil:1' }, as('node-a'));
      assert.equal(forged.status, 403);
      assert.equal(errorOf(forged).code, 'LOOM_ERR_FORBIDDEN');
      assert.match(errorOf(forged).message, /node node-a cannot heartbeat for node node-b/);
      const wrongToken = await beat(s, 'node-b', {}, { authorization: `Bearer ${nodeToken(SECRET, 'node-a')}` });
      assert.equal(wrongToken.status, 401, "another node's token is not this node's");
      assert.equal((await beat(s, 'node-b', {}, as('node-b', nodeToken('other-secret', 'node-b')))).status, 401);
      assert.equal((await beat(s, 'node-c')).status, 401, 'no token');

      const nodes = (await s.call('GET', '/v1/nodes', undefined, as('node-a'))).body as {
        nodes: Array<{ id: string; url: string }>;
      };
      assert.deepEqual(
        nodes.nodes.map((n) => [n.id, n.url]),
        [
          ['node-a', 'http://node-a.test:7071'],
          ['node-b', 'http://node-b.test:7071'],
        ],
      );
    });

    it('lets a node announce, withdraw and deregister only itself', async () => {
      const s = await secured();
      for (const id of ['node-a', 'node-b']) await beat(s, id, {}, as(id));
      const announce = (node: string, headers: Record<string, string>) =>
        s.call('PUT', `/v1/blobs/${D1}/replicas/${node}`, { complete: true }, headers);
      assert.equal((await announce('node-a', as('node-a'))).status, 200);
      assert.equal((await announce('node-b', as('node-a'))).status, 403);
      assert.equal((await announce('node-b', admin)).status, 200, 'the admin token can do everything');
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}/replicas/node-b`, undefined, as('node-a'))).status, 403);
      assert.equal((await s.call('DELETE', '/v1/nodes/node-b', undefined, as('node-a'))).status, 403);
      assert.deepEqual((await peerIds(s, D1, '', admin)).sort(), ['node-a', 'node-b']);
      assert.equal((await s.call('DELETE', '/v1/nodes/node-a', undefined, as('node-a'))).status, 204);
      assert.deepEqual(await peerIds(s, D1, '', admin), ['node-b']);
    });

    it('takes the reporter from the credential, and quarantines only on distinct authenticated nodes', async () => {
      const s = await secured();
      for (const id of ['bad', 'good']) {
        await beat(s, id, {}, as(id));
        await s.call('PUT', `/v1/blobs/${D1}/replicas/${id}`, { complete: true }, as(id));
      }
      const report = (headers: Record<string, string>, body: Record<string, unknown> = {}) =>
        s.call('POST', '/v1/reports', { digest: D1, node: 'bad', ...body }, headers);
      // One node cannot stand for three: the body's reporter is refused, repeats count once.
      for (const name of ['r1', 'r2', 'r3']) {
        const forged = await report(as('liar'), { reporter: name });
        assert.equal(forged.status, 403);
        assert.equal(errorOf(forged).code, 'LOOM_ERR_FORBIDDEN');
        const res = await report(as('liar'));
        assert.equal(res.status, 202);
        assert.deepEqual(
          [(res.body as { reporter: string }).reporter, (res.body as { reports: number }).reports],
          ['liar', 1],
        );
      }
      assert.deepEqual((await peerIds(s, D1, '', admin)).sort(), ['bad', 'good']);
      assert.equal((await report(as('r2'))).status, 202);
      const third = await report(as('r3'));
      assert.deepEqual((third.body as { quarantined: boolean }).quarantined, true);
      assert.deepEqual(await peerIds(s, D1, '', admin), ['good']);
      const anonymous = await report({}, { reporter: 'r4' });
      assert.equal(anonymous.status, 401);
      assert.equal((await report(admin, { reporter: 'ops' })).status, 202, 'the admin may still name a reporter');
    });

    it('keeps admin routes from node tokens: removing a manifest, repointing a source, /register', async () => {
      const s = await secured();
      await beat(s, 'node-a', {}, as('node-a'));
      const manifest = { size: 4, pieceSize: 4, pieces: [PIECE], verifiedAgainst: 'sha256-pinned' };
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, manifest, as('node-a'))).status, 201);
      const denied = await s.call('DELETE', `/v1/blobs/${D1}`, undefined, as('node-a'));
      assert.equal(denied.status, 403);
      assert.equal((await s.call('GET', `/v1/blobs/${D1}`, undefined, as('node-a'))).status, 200);
      assert.equal((await s.call('DELETE', `/v1/blobs/${D1}`, undefined, admin)).status, 204);

      const key = 'https://bucket.example/m.bin';
      // A node maps a source only under its lease on the blob (here: the source's id).
      const noLease = await s.call('PUT', '/v1/sources', { key, digest: D1 }, as('node-a'));
      assert.equal(noLease.status, 403);
      assert.match(errorOf(noLease).message, /holds no lease/);
      const lease = (await s.call('POST', `/v1/blobs/${sourceBlobId(key)}/leases`, { node: 'node-a' }, as('node-a')))
        .body as { token: string };
      await beat(s, 'node-b', {}, as('node-b'));
      const othersLease = { key, digest: D1, lease: lease.token };
      assert.equal((await s.call('PUT', '/v1/sources', othersLease, as('node-b'))).status, 403, "another node's lease");
      // The mapping needs the blob's manifest, and it must be the piece list the lease holder
      // published under the source's lease as it hashed the blob.
      const mapping = { key, digest: D1, lease: lease.token };
      const noManifest = await s.call('PUT', '/v1/sources', mapping, as('node-a'));
      assert.equal(noManifest.status, 403);
      assert.match(errorOf(noManifest).message, /cannot map .* the blob has no manifest/);
      assert.equal((await s.call('PUT', `/v1/blobs/${D1}`, manifest, as('node-b'))).status, 201);
      const unpublished = await s.call('PUT', '/v1/sources', mapping, as('node-a'));
      assert.equal(unpublished.status, 403, 'no piece list published under the lease');
      assert.match(errorOf(unpublished).message, /not the piece list it published under its lease/);
      // A lease on the digest itself proves nothing (any node may take one on a digest of its
      // own): with it, node-b could point the URL at its own bytes and manifest.
      const digestLease = (await s.call('POST', `/v1/blobs/${D1}/leases`, { node: 'node-b' }, as('node-b'))).body as {
        token: string;
      };
      const ownPieces = { lease: digestLease.token, size: 4, pieceSize: 4, pieces: [PIECE] };
      assert.equal((await s.call('PUT', `/v1/sources/${D1}/pieces`, ownPieces, as('node-b'))).status, 200);
      const shortcut = await s.call('PUT', '/v1/sources', { key, digest: D1, lease: digestLease.token }, as('node-b'));
      assert.equal(shortcut.status, 403, 'a lease on the digest cannot map a source');
      assert.match(errorOf(shortcut).message, /node node-b holds no lease on/);
      const pieces = { lease: lease.token, size: 4, pieceSize: 4, pieces: [PIECE] };
      const published = await s.call('PUT', `/v1/sources/${sourceBlobId(key)}/pieces`, pieces, as('node-a'));
      assert.equal(published.status, 200);
      assert.equal((await s.call('PUT', '/v1/sources', mapping, as('node-a'))).status, 200);
      assert.equal((await s.call('PUT', `/v1/blobs/${D2}`, manifest, as('node-a'))).status, 201);
      const again = { key, digest: D2, lease: lease.token };
      assert.equal((await s.call('PUT', '/v1/sources', again, as('node-a'))).status, 409);
      const repoint = { key, digest: D2, replace: true };
      assert.equal((await s.call('PUT', '/v1/sources', repoint, as('node-a'))).status, 403);
      assert.equal((await s.call('PUT', '/v1/sources', repoint, admin)).status, 200);

      const register = { node: 'node1', model: 'llama-2-7b' };
      assert.equal((await s.call('POST', '/register', register, as('node-a'))).status, 403);
      assert.equal((await s.call('POST', '/register', register, admin)).status, 200);
    });

    it('with a cluster secret alone, refuses writes without a token and reads unless they are open', async () => {
      const closed = await service(factory, { clusterSecret: SECRET });
      assert.equal((await beat(closed, 'n1')).status, 401);
      assert.equal((await closed.call('GET', '/v1/nodes')).status, 401);
      assert.equal((await beat(closed, 'n1', {}, as('n1'))).status, 200);
      assert.equal((await closed.call('GET', `/v1/blobs/${D1}/peers?node=n1`, undefined, as('n1'))).status, 200);
      const open = await service(factory, { clusterSecret: SECRET, openReads: true });
      assert.equal((await open.call('GET', '/v1/nodes')).status, 200);
      assert.equal((await beat(open, 'n1')).status, 401);
    });
  });
}
