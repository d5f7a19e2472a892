// The control plane client's node calls against a real control plane: what each outcome
// looks like to the agent (accepted, refused with the server's message, or unreachable).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { ControlPlaneClient, heartbeatInterval, nodeToken } from '../../src/control-plane/client.js';
import { ClientSwarmControl } from '../../src/peer/swarm-control.js';
import { freePort } from '../helpers/redis.js';
import { REPO_ROOT } from '../helpers/fixtures.js';

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
    // Holders as a fetching node reads them (its swarm asks through the same client).
    const holders = async () => (await new ClientSwarmControl(client).holders(D, { node: 'n2', limit: 10 })) ?? [];

    const early = await client.announce(D, 'n1', { complete: true });
    assert.equal(early.status, 404, 'a node must beat before it announces');
    assert.match(early.message, /node n1 is not live/);

    const beat = await client.sendHeartbeat('n1', { url: 'http://n1:7071', freeUploadSlots: 4 });
    assert.equal(beat.status, 200);
    assert.equal(heartbeatInterval(beat), 10);

    assert.equal((await client.announce(D, 'n1', { complete: false, pieces: [0, 2] })).status, 200);
    assert.deepEqual(
      (await holders()).map((p) => [p.id, p.complete, p.pieces]),
      [['n1', false, [0, 2]]],
    );
    assert.equal((await client.announce(D, 'n1', { complete: true })).status, 200);
    assert.equal((await holders())[0]!.complete, true);

    const manifest = { digest: D, size: 10, pieceSize: 10, pieces: [P], verifiedAgainst: 'sha256-pinned' as const };
    assert.equal((await client.putManifest(manifest)).status, 201);
    assert.equal((await client.putManifest(manifest)).status, 200);
    assert.equal((await client.putManifest({ ...manifest, pieces: [D] })).status, 409);

    assert.equal((await client.withdraw(D, 'n1')).status, 204);
    assert.equal((await client.withdraw(D, 'n1')).status, 404);
    assert.deepEqual(await holders(), []);

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

  it('asks over node:http: a process using the client never loads undici (the global fetch)', async () => {
    // undici's fetch cost ~1.2 ms of CPU per call here against ~0.3 ms for node:http, and a
    // fetching node of a fleet asks several times a second; it is also not compiled at all now.
    const store = new SqliteStore(':memory:');
    const app = await buildControlPlane({ store });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    after(async () => {
      await app.close();
      await store.close();
    });
    const script = `
      const { ControlPlaneClient } = await import('./src/control-plane/client.ts');
      const client = new ControlPlaneClient({ baseUrl: ${JSON.stringify(url)}, nodeId: 'n1' });
      const statuses = [
        (await client.sendHeartbeat('n1', { url: 'http://n1:7071' })).status,
        (await client.announce('${D}', 'n1', { complete: false, pieces: [0, 1] })).status,
        (await client.send('GET', '/v1/blobs/${D}/peers')).body.peers.map((p) => p.pieces),
        (await client.send('POST', '/v1/blobs/${D}/leases', { node: 'n1' })).body.granted,
      ];
      console.log(JSON.stringify({ statuses, undici: process.moduleLoadList.some((m) => m.includes('undici')) }));
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        cwd: REPO_ROOT,
      },
    );
    assert.deepEqual(JSON.parse(stdout), { statuses: [200, 200, [[0, 1]], true], undici: false });
  });

  it('sends a request again on a new connection when the control plane closed a kept-alive one', async () => {
    // A server that answers the first request of a connection and closes the connection at
    // the second, unanswered, as a server whose keep-alive timeout just ran out does.
    let connections = 0;
    let requests = 0;
    const sockets = new Set<import('node:net').Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      connections++;
      let answered = 0;
      socket.on('data', (data) => {
        for (let i = data.indexOf('\r\n\r\n'); i >= 0; i = data.indexOf('\r\n\r\n', i + 4)) {
          requests++;
          if (answered++ > 0) {
            socket.destroy();
            return;
          }
          const body = JSON.stringify({ digest: D });
          socket.write(
            `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: keep-alive\r\n\r\n${body}`,
          );
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    after(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    });
    const client = new ControlPlaneClient({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
    const first = await client.send('GET', '/v1/sources?key=a');
    const second = await client.send('GET', '/v1/sources?key=b');
    assert.deepEqual([first.status, second.status], [200, 200], second.message);
    assert.deepEqual((second.body as { digest: string }).digest, D);
    // The second request went out twice: on the kept-alive connection, then on a new one.
    assert.deepEqual([connections, requests], [2, 3]);
  });

  it('derives a node token as hex(HMAC-SHA256(secret, "loom-node:" + id))', () => {
    const expected = createHmac('sha256', 'cluster-secret').update('loom-node:gpu-7').digest('hex');
    assert.equal(nodeToken('cluster-secret', 'gpu-7'), expected);
    assert.notEqual(nodeToken('cluster-secret', 'gpu-8'), expected);
  });
});
