// What happens around the control plane when things go away: Redis stopping and coming
// back, a control plane that does not answer, and the `loom control-plane` command itself.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RedisStore } from '../../src/control-plane/redis-store.js';
import { ClientSwarmControl } from '../../src/peer/swarm-control.js';
import { buildControlPlane, ControlPlaneClient, nodeToken } from '../../src/index.js';
import { collect, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { freePort, startRedisServer, stopRedisServer } from '../helpers/redis.js';

const dir = tempDir();
const D1 = 'c'.repeat(64);

describe('control plane availability', () => {
  it('answers 503 while Redis is down and recovers by itself when it returns', async () => {
    const port = await freePort();
    let redis = await startRedisServer(port);
    const store = new RedisStore({ url: `redis://127.0.0.1:${port}`, prefix: 'loom-down-test' });
    const app = await buildControlPlane({ store });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    after(async () => {
      await app.close();
      await store.close();
      await stopRedisServer(redis);
    });
    const beat = () =>
      fetch(`${url}/v1/nodes/n1`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ url: 'http://n1:1' }),
      });
    await waitFor('redis ready', async () => ((await beat()).status === 200 ? true : undefined));

    await stopRedisServer(redis);
    await waitFor('store down', async () => ((await fetch(`${url}/readyz`)).status === 503 ? true : undefined));
    const write = await beat();
    assert.equal(write.status, 503);
    const body = (await write.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'LOOM_ERR_STORE_UNAVAILABLE');
    assert.match(body.error.message, /Redis at redis:\/\/127\.0\.0\.1:\d+ is unavailable/);
    assert.equal((await fetch(`${url}/v1/blobs/${D1}/peers`)).status, 503);
    assert.equal((await fetch(`${url}/v1/nodes`)).status, 503);
    assert.equal((await fetch(`${url}/healthz`)).status, 200, 'the process itself is healthy');

    redis = await startRedisServer(port);
    await waitFor('recovery', async () => ((await beat()).status === 200 ? true : undefined));
    assert.equal((await fetch(`${url}/readyz`)).status, 200);
    const nodes = (await (await fetch(`${url}/v1/nodes`)).json()) as { nodes: Array<{ id: string }> };
    assert.deepEqual(
      nodes.nodes.map((n) => n.id),
      ['n1'],
    );
  });

  it('a client treats a control plane that does not answer as "no peers", quickly', async () => {
    const sockets: Socket[] = [];
    const silent = createServer((socket) => sockets.push(socket)); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    after(() => {
      sockets.forEach((s) => s.destroy());
      silent.close();
    });
    const client = new ControlPlaneClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 300 });
    const started = performance.now();
    // undefined: no control plane, so the fetch goes to the origin (as with none answering).
    assert.equal(await new ClientSwarmControl(client).holders(D1, { node: 'n1', limit: 10 }), undefined);
    const elapsed = performance.now() - started;
    // Bounded by the 300 ms timeout, not by the silent server (which never answers); the bound
    // leaves room for a loaded machine's stalls.
    assert.ok(elapsed < 10_000, `gave up after ${Math.round(elapsed)} ms`);
    const refused = new ControlPlaneClient({ baseUrl: `http://127.0.0.1:${await freePort()}` });
    assert.equal(await new ClientSwarmControl(refused).holders(D1, { node: 'n1', limit: 10 }), undefined);
    assert.equal(await refused.heartbeat('n1', { url: 'http://n1:1' }), undefined);
  });

  it('loom control-plane serves the API with its SQLite store, an admin token and a cluster secret', async () => {
    const port = await freePort();
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${'t'.repeat(32)}\n`);
    // A --store path's folder must exist (only the default store's folder is made).
    mkdirSync(join(dir, 'cp'), { recursive: true });
    const child = startLoom(
      [
        'control-plane',
        '--listen',
        `127.0.0.1:${port}`,
        '--store',
        `sqlite:${join(dir, 'cp', 'registry.db')}`,
        '--token-file',
        tokenFile,
        '--open-reads',
      ],
      { LOOM_CLUSTER_SECRET: 's'.repeat(32) },
    );
    const done = collect(child);
    const base = `http://127.0.0.1:${port}`;
    await waitFor('listening', async () => ((await fetch(`${base}/healthz`)).ok ? true : undefined));
    const client = new ControlPlaneClient({ baseUrl: base, token: 't'.repeat(32) });
    assert.equal(await client.heartbeat('cli-node', { url: 'http://cli-node:7071' }), 10);
    const anonymous = await fetch(`${base}/v1/nodes/x`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ url: 'http://x:1' }),
    });
    assert.equal(anonymous.status, 401);
    const asNode = (id: string, claimed = id) =>
      fetch(`${base}/v1/nodes/${id}`, {
        method: 'PUT',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${nodeToken('s'.repeat(32), claimed)}`,
          'x-loom-node': claimed,
        },
        body: JSON.stringify({ url: `http://${id}:7071`, epoch: 'boot-1' }),
      });
    assert.equal((await asNode('node-a')).status, 200);
    assert.equal((await asNode('cli-node', 'node-a')).status, 403);
    const nodes = (await (await fetch(`${base}/v1/nodes`)).json()) as { nodes: Array<{ id: string }> };
    assert.deepEqual(
      nodes.nodes.map((n) => n.id),
      ['cli-node', 'node-a'],
    );
    child.kill('SIGTERM');
    const run = await done;
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stderr,
      /control plane on http:\/\/127\.0\.0\.1:\d+ \(store: sqlite, the admin token or a node's own token required for writes; reads open\)/,
    );
  });

  it('loom control-plane refuses a bad --listen or store with exit 2', async () => {
    const bad = await collect(startLoom(['control-plane', '--listen', 'nowhere']));
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--listen "nowhere" is not HOST:PORT/);
    const store = await collect(startLoom(['control-plane', '--listen', '127.0.0.1:0', '--store', 'mysql://x']));
    assert.equal(store.code, 2);
    assert.match(store.stderr, /unknown store "mysql:\/\/x"/);
  });
});

describe('loom fetch --serve', () => {
  it("keeps running after the download and serves the original tool's registry in-process", async () => {
    const { OriginServer } = await import('../support/origin-server.js');
    const origin = await new OriginServer().listen();
    after(() => origin.close());
    origin.setFile('/model.bin', Buffer.alloc(1024 * 1024, 7));
    const port = await freePort();
    const out = join(dir, 'served.bin');
    const child = startLoom([
      'fetch',
      '--url',
      origin.url('/model.bin'),
      '--out',
      out,
      '--serve',
      '--listen',
      `127.0.0.1:${port}`,
    ]);
    const done = collect(child);
    const base = `http://127.0.0.1:${port}`;
    const located = await waitFor('registry up', async () => {
      const res = await fetch(`${base}/locate/served.bin`);
      return res.ok ? ((await res.json()) as { nodes: string[] }) : undefined;
    });
    assert.deepEqual(located.nodes, [base]);
    child.kill('SIGTERM');
    const run = await done;
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /serving the registry on http:\/\/127\.0\.0\.1:\d+/);
  });
});
