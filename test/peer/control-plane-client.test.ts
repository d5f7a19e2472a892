// The control plane client's node calls against a real control plane: what each outcome
// looks like to the agent (accepted, refused with the server's message, or unreachable).
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { ControlPlaneClient, heartbeatInterval, nodeToken } from '../../src/control-plane/client.js';
import { freePort } from '../helpers/redis.js';

const D = 'd'.repeat(64);
const P = 'e'.repeat(64);

describe('control plane client: node calls', () => {
  it('announces, withdraws, publishes a manifest and deregisters, with the outcomes the agent acts on', async () => {
    const store = new SqliteStore(':memory:');
    const app = await buildControlPlane({ store });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    after(async () => {
      await app.close();
      await store.close();
    });
    const client = new ControlPlaneClient({ baseUrl: url });

    const early = await client.announce(D, 'n1', { complete: true });
    assert.equal(early.status, 404, 'a node must beat before it announces');
    assert.match(early.message, /node n1 is not live/);

    const beat = await client.sendHeartbeat('n1', { url: 'http://n1:7071', freeUploadSlots: 4 });
    assert.equal(beat.status, 200);
    assert.equal(heartbeatInterval(beat), 10);

    assert.equal((await client.announce(D, 'n1', { complete: false, pieces: [0, 2] })).status, 200);
    assert.deepEqual(
      (await client.locate(D)).map((p) => [p.id, p.complete, p.pieces]),
      [['n1', false, [0, 2]]],
    );
    assert.equal((await client.announce(D, 'n1', { complete: true })).status, 200);
    assert.equal((await client.locate(D))[0]!.complete, true);

    const manifest = { digest: D, size: 10, pieceSize: 10, pieces: [P], verifiedAgainst: 'sha256-pinned' as const };
    assert.equal((await client.putManifest(manifest)).status, 201);
    assert.equal((await client.putManifest(manifest)).status, 200);
    assert.equal((await client.putManifest({ ...manifest, pieces: [D] })).status, 409);

    assert.equal((await client.withdraw(D, 'n1')).status, 204);
    assert.equal((await client.withdraw(D, 'n1')).status, 404);
    assert.deepEqual(await client.locate(D), []);

    assert.equal((await client.deregister('n1')).status, 204);
    assert.equal((await client.deregister('n1')).status, 404);
  });

  it('reports an unreachable control plane as no status, never a throw', async () => {
    const client = new ControlPlaneClient({ baseUrl: `http://127.0.0.1:${await freePort()}`, timeoutMs: 500 });
    for (const answer of [
      await client.sendHeartbeat('n1', { url: 'http://n1:1', epoch: 'boot-1' }),
      await client.announce(D, 'n1', { complete: true }),
      await client.withdraw(D, 'n1'),
      await client.deregister('n1'),
    ]) {
      assert.equal(answer.status, undefined);
      assert.equal(answer.ok, false);
      assert.match(answer.message, /ECONNREFUSED|fetch failed/);
    }
  });

  it('derives a node token as hex(HMAC-SHA256(secret, "loom-node:" + id))', () => {
    const expected = createHmac('sha256', 'cluster-secret').update('loom-node:gpu-7').digest('hex');
    assert.equal(nodeToken('cluster-secret', 'gpu-7'), expected);
    assert.notEqual(nodeToken('cluster-secret', 'gpu-8'), expected);
  });
});
