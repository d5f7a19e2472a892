// Piece digests published under a source's id by the node fetching it from the origin (the
// lease holder), on both stores: only a live lease's holder writes them, a holder with an
// older fencing token cannot overwrite a newer one's, and anyone with read access reads them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nodeToken } from '../../src/index.js';
import { D1, D2, PIECE, errorOf, factories, service } from './harness.js';

const secret = 'pieces-cluster-secret-0123456789';
const as = (id: string) => ({ authorization: `Bearer ${nodeToken(secret, id)}`, 'x-loom-node': id });
const MiB = 1024 * 1024;

for (const factory of factories) {
  describe(`control plane piece digests under a source id (${factory.name})`, () => {
    it('the lease holder writes them and anyone reads them; another node cannot, even with its token', async () => {
      const s = await service(factory, { clusterSecret: secret });
      const lease = await s.call('POST', `/v1/blobs/${D1}/leases`, { node: 'leader' }, as('leader'));
      const token = (lease.body as { token: string }).token;
      const body = { lease: token, size: 40 * MiB + 1, pieceSize: 16 * MiB, pieces: [PIECE] };

      const none = await s.call('GET', `/v1/sources/${D1}/pieces`, undefined, as('follower'));
      assert.equal(none.status, 404);

      const written = await s.call('PUT', `/v1/sources/${D1}/pieces`, body, as('leader'));
      assert.equal(written.status, 200, JSON.stringify(written.body));
      const more = await s.call('PUT', `/v1/sources/${D1}/pieces`, { ...body, pieces: [PIECE, D2] }, as('leader'));
      assert.equal(more.status, 200);
      const read = await s.call('GET', `/v1/sources/${D1}/pieces`, undefined, as('follower'));
      assert.equal(read.status, 200);
      assert.deepEqual(read.body, {
        id: D1,
        size: 40 * MiB + 1,
        pieceSize: 16 * MiB,
        pieces: [PIECE, D2],
        fencingToken: (lease.body as { fencingToken: number }).fencingToken,
      });

      // A follower that learnt the leader's token still cannot write as the leader.
      const forged = await s.call('PUT', `/v1/sources/${D1}/pieces`, { ...body, pieces: [D2] }, as('follower'));
      assert.equal(forged.status, 403);
      assert.equal(errorOf(forged).code, 'LOOM_ERR_FORBIDDEN');
      assert.match(errorOf(forged).message, /node follower holds no live lease on a{64}/);
      const noLease = await s.call(
        'PUT',
        `/v1/sources/${D1}/pieces`,
        { ...body, lease: 'f'.repeat(32), pieces: [D2] },
        as('follower'),
      );
      assert.equal(noLease.status, 403);
      assert.equal(errorOf(noLease).code, 'LOOM_ERR_FORBIDDEN');
      const anonymous = await s.call('PUT', `/v1/sources/${D1}/pieces`, body);
      assert.equal(anonymous.status, 401);
      // Nothing of theirs was recorded.
      const after = await s.call('GET', `/v1/sources/${D1}/pieces`, undefined, as('follower'));
      assert.deepEqual((after.body as { pieces: string[] }).pieces, [PIECE, D2]);
    });

    it('refuses a holder with an older fencing token once a newer one wrote (409), and malformed bodies (400)', async () => {
      const s = await service(factory, { clusterSecret: secret });
      const first = await s.call('POST', `/v1/blobs/${D1}/leases`, { node: 'old', slots: 2 }, as('old'));
      const second = await s.call('POST', `/v1/blobs/${D1}/leases`, { node: 'new', slots: 2 }, as('new'));
      const [older, newer] = [first.body, second.body] as Array<{ token: string; fencingToken: number }>;
      assert.ok(newer!.fencingToken > older!.fencingToken);
      const body = { size: 3 * MiB, pieceSize: MiB, pieces: [PIECE] };
      assert.equal(
        (await s.call('PUT', `/v1/sources/${D1}/pieces`, { ...body, lease: older!.token }, as('old'))).status,
        200,
      );
      assert.equal(
        (await s.call('PUT', `/v1/sources/${D1}/pieces`, { ...body, lease: newer!.token }, as('new'))).status,
        200,
      );
      const stale = await s.call(
        'PUT',
        `/v1/sources/${D1}/pieces`,
        { ...body, lease: older!.token, pieces: [D2] },
        as('old'),
      );
      assert.equal(stale.status, 409);
      assert.equal(errorOf(stale).code, 'LOOM_ERR_CONFLICT');
      const kept = await s.call('GET', `/v1/sources/${D1}/pieces`, undefined, as('old'));
      assert.deepEqual((kept.body as { pieces: string[]; fencingToken: number }).pieces, [PIECE]);
      assert.equal((kept.body as { fencingToken: number }).fencingToken, newer!.fencingToken);

      const tooMany = await s.call(
        'PUT',
        `/v1/sources/${D1}/pieces`,
        { ...body, lease: newer!.token, pieces: [PIECE, PIECE, PIECE, PIECE] },
        as('new'),
      );
      assert.equal(tooMany.status, 400);
      assert.match(errorOf(tooMany).message, /body\.pieces/);
      const badDigest = await s.call(
        'PUT',
        `/v1/sources/${D1}/pieces`,
        { ...body, lease: newer!.token, pieces: ['nothex'] },
        as('new'),
      );
      assert.equal(badDigest.status, 400);
    });
  });
}
