// The agent's life against a real control plane (SQLite store, loopback) and a real node
// cache: what the cache holds shows in locate, complete or by verified pieces; what leaves
// the cache is withdrawn; stop deregisters; a control plane that is down or forgot the node
// costs nothing but time.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { openCache, removeFromCache } from '../../src/cache/cache-admin.js';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { Agent, advertiseUrl, type AgentOptions } from '../../src/peer/agent.js';
import { sha256Of, tempDir, waitFor } from '../helpers/fixtures.js';
import { freePort } from '../helpers/redis.js';
import { makeCache, putBlob, putPartial } from './peer-fixtures.js';

const dir = tempDir();
let dbs = 0;

interface Cp {
  url: string;
  app: FastifyInstance;
  /** Bodies of every heartbeat received, in order. */
  beats: Array<Record<string, unknown>>;
  /** `PUT <digest>` for every replica announcement received. */
  announcements: string[];
  close(): Promise<void>;
}

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
});

/** A real control plane; a node beats every 0.5 s (TTL 1.5 s) so the tests move quickly. */
async function startCp(port = 0, token?: string): Promise<Cp> {
  const store = new SqliteStore(join(dir, `cp-${++dbs}.db`));
  const app = await buildControlPlane({ store, nodeTtlMs: 1_500, token, openReads: true });
  const beats: Array<Record<string, unknown>> = [];
  const announcements: string[] = [];
  app.addHook('preHandler', async (request) => {
    if (request.method === 'PUT' && request.url.startsWith('/v1/nodes/'))
      beats.push({ ...(request.body as Record<string, unknown>) });
    const replica = /^\/v1\/blobs\/([0-9a-f]{64})\/replicas\//.exec(request.url);
    if (request.method === 'PUT' && replica) announcements.push(replica[1]!);
  });
  const url = await app.listen({ host: '127.0.0.1', port });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await app.close();
    await store.close();
  };
  closers.push(close);
  return { url, app, beats, announcements, close };
}

async function startAgent(cp: string, cacheRoot: string, options: Partial<AgentOptions> = {}): Promise<Agent> {
  const agent = await Agent.start({
    controlPlane: cp,
    cacheRoot,
    nodeId: 'node-a',
    listen: { host: '127.0.0.1', port: 0 },
    scanIntervalMs: 200,
    log: () => undefined,
    ...options,
  });
  closers.push(() => agent.stop(0));
  return agent;
}

interface Peer {
  id: string;
  url: string;
  complete: boolean;
  pieces: number[] | null;
}

async function peers(cp: string, digest: string): Promise<Peer[]> {
  const res = await fetch(`${cp}/v1/blobs/${digest}/peers`);
  return ((await res.json()) as { peers: Peer[] }).peers;
}

async function nodes(cp: string): Promise<string[]> {
  const res = await fetch(`${cp}/v1/nodes`);
  return ((await res.json()) as { nodes: Array<{ id: string }> }).nodes.map((n) => n.id);
}

describe('agent lifecycle', () => {
  it('announces a cached blob as complete, withdraws it when removed, and deregisters on stop', async () => {
    const cp = await startCp();
    const root = await makeCache();
    const bytes = randomBytes(256 * 1024);
    const digest = await putBlob(root, bytes);
    const agent = await startAgent(cp.url, root);

    const [peer] = await waitFor('announced', async () => {
      const list = await peers(cp.url, digest);
      return list.length > 0 && list;
    });
    assert.equal(peer!.id, 'node-a');
    assert.equal(peer!.complete, true);
    assert.equal(peer!.url, agent.advertisedUrl);
    // Where locate points is where the bytes are.
    const res = await fetch(`${peer!.url}/v1/blobs/${digest}`);
    assert.equal(sha256Of(Buffer.from(await res.arrayBuffer())), digest);

    const cache = await openCache(root);
    await removeFromCache(cache, digest);
    cache.close();
    await waitFor('withdrawn', async () => (await peers(cp.url, digest)).length === 0);
    assert.deepEqual(await nodes(cp.url), ['node-a'], 'the node itself stays');

    await agent.stop(0);
    assert.deepEqual(await nodes(cp.url), []);
  });

  it('announces a download in progress with its verified pieces, follows them, and turns complete', async () => {
    const cp = await startCp();
    const root = await makeCache();
    const bytes = randomBytes(4 * 4096);
    const partial = putPartial(root, bytes, 4096, []);
    const other = putPartial(root, randomBytes(8192), 4096, [1]);
    await startAgent(cp.url, root);

    await waitFor('other partial announced', async () => (await peers(cp.url, other.digest)).length === 1);
    assert.deepEqual(await peers(cp.url, partial.digest), [], 'nothing verified: nothing to offer');

    partial.setVerified([0]);
    await waitFor('first piece', async () => (await peers(cp.url, partial.digest))[0]?.pieces?.join() === '0');
    partial.setVerified([0, 1, 3]);
    const [peer] = await waitFor('more pieces', async () => {
      const list = await peers(cp.url, partial.digest);
      return list[0]?.pieces?.join() === '0,1,3' && list;
    });
    assert.equal(peer!.complete, false);

    // The download ends: its pieces file goes and the blob is in the store.
    const { tmp } = cacheLayout(root);
    rmSync(join(tmp, `${partial.digest}.pieces.json`));
    rmSync(join(tmp, `${partial.digest}.part`));
    await putBlob(root, bytes);
    await waitFor('complete', async () => (await peers(cp.url, partial.digest))[0]?.complete === true);

    // A download abandoned (its files removed) is withdrawn.
    rmSync(join(tmp, `${other.digest}.pieces.json`));
    await waitFor('abandoned withdrawn', async () => (await peers(cp.url, other.digest)).length === 0);
  });

  it('refreshes a partial replica every heartbeat interval, and a complete one only when it changes', async () => {
    const cp = await startCp();
    const root = await makeCache();
    const complete = await putBlob(root, randomBytes(1000));
    const partial = putPartial(root, randomBytes(8192), 4096, [0]);
    await startAgent(cp.url, root);
    // The node beats every 0.5 s: three announcements of the unchanged partial take ~1.5 s.
    await waitFor('partial refreshed', () => cp.announcements.filter((d) => d === partial.digest).length >= 3);
    assert.equal(cp.announcements.filter((d) => d === complete).length, 1);
    assert.deepEqual((await peers(cp.url, partial.digest))[0]?.pieces, [0]);
  });

  it("publishes the cache's manifest of a blob with its announcement", async () => {
    const cp = await startCp();
    const root = await makeCache();
    const bytes = randomBytes(3 * 1024);
    const digest = await putBlob(root, bytes);
    const pieces = [0, 1, 2].map((i) => sha256Of(bytes.subarray(i * 1024, (i + 1) * 1024)));
    mkdirSync(join(root, 'manifests'));
    writeFileSync(
      join(root, 'manifests', `${digest}.json`),
      JSON.stringify({ digest, size: bytes.length, pieceSize: 1024, pieces, verifiedAgainst: 'sha256-pinned' }),
    );
    const noManifest = await putBlob(root, randomBytes(100));
    await startAgent(cp.url, root);

    const manifest = await waitFor('manifest', async () => {
      const res = await fetch(`${cp.url}/v1/blobs/${digest}`);
      return res.ok && ((await res.json()) as { size: number; pieceSize: number; pieces: string[] });
    });
    assert.equal(manifest.size, bytes.length);
    assert.equal(manifest.pieceSize, 1024);
    assert.deepEqual(manifest.pieces, pieces);
    await waitFor('announced without a manifest', async () => (await peers(cp.url, noManifest)).length === 1);
    assert.equal((await fetch(`${cp.url}/v1/blobs/${noManifest}`)).status, 404);
  });

  it('heartbeats carry a boot epoch, new at every start, and the free upload slots', async () => {
    const cp = await startCp();
    const root = await makeCache();
    const first = await startAgent(cp.url, root, { maxUploads: 3 });
    await waitFor('registered', () => first.isRegistered);
    await first.stop(0);
    const second = await startAgent(cp.url, root);
    await waitFor('registered again', () => second.isRegistered);
    const epochs = cp.beats.map((b) => b.epoch).filter((e) => e !== undefined);
    assert.equal(epochs[0], first.epoch);
    assert.ok(epochs.includes(second.epoch));
    assert.notEqual(first.epoch, second.epoch);
    assert.equal(cp.beats[0]!.freeUploadSlots, 3);
    assert.equal(cp.beats[0]!.url, first.advertisedUrl);
  });

  it('keeps serving while the control plane is down, and announces once it is up', async () => {
    const port = await freePort();
    const root = await makeCache();
    const digest = await putBlob(root, randomBytes(10_000));
    const agent = await startAgent(`http://127.0.0.1:${port}`, root, { controlPlaneTimeoutMs: 300 });
    const res = await fetch(`${agent.advertisedUrl}/v1/blobs/${digest}`);
    assert.equal(res.status, 200);
    assert.equal(sha256Of(Buffer.from(await res.arrayBuffer())), digest);
    assert.equal(agent.isRegistered, false);

    const cp = await startCp(port);
    await waitFor('announced after the outage', async () => (await peers(cp.url, digest)).length === 1, 15_000);

    // The control plane restarts on an empty store: once heard again, it is told everything.
    await cp.close();
    await waitFor('heartbeat missed', () => !agent.isRegistered);
    const fresh = await startCp(port);
    await waitFor('announced to the new store', async () => (await peers(fresh.url, digest)).length === 1, 15_000);
  });

  it('announces everything again now and then, so a control plane that lost its store without a missed beat relearns', async () => {
    const port = await freePort();
    const cp = await startCp(port);
    const root = await makeCache();
    const digest = await putBlob(root, randomBytes(10_000));
    await startAgent(cp.url, root, { reannounceIntervalMs: 500 });
    await waitFor('announced', async () => (await peers(cp.url, digest)).length === 1);
    await cp.close();
    const fresh = await startCp(port);
    await waitFor('announced to the new store', async () => (await peers(fresh.url, digest)).length === 1);
  });

  it('with a peer token, peers must present it, while the control plane gets the node token', async () => {
    const nodeToken = 'n'.repeat(32);
    const peerToken = 'p'.repeat(32);
    const cp = await startCp(0, nodeToken);
    const root = await makeCache();
    const digest = await putBlob(root, randomBytes(2000));
    const agent = await startAgent(cp.url, root, { token: nodeToken, peerToken });
    await waitFor('announced with the node token', async () => (await peers(cp.url, digest)).length === 1);
    const url = `${agent.advertisedUrl}/v1/blobs/${digest}`;
    assert.equal((await fetch(url, { headers: { authorization: `Bearer ${nodeToken}` } })).status, 401);
    const res = await fetch(url, { headers: { authorization: `Bearer ${peerToken}` } });
    assert.equal(res.status, 200);
    assert.equal(sha256Of(Buffer.from(await res.arrayBuffer())), digest);
  });

  it('advertises the listen address, or the host name with a warning on a wildcard', () => {
    assert.deepEqual(advertiseUrl('10.1.2.3', 7071), { url: 'http://10.1.2.3:7071' });
    assert.deepEqual(advertiseUrl('::1', 7071), { url: 'http://[::1]:7071' });
    const wildcard = advertiseUrl('0.0.0.0', 7071, 'gpu-17');
    assert.equal(wildcard.url, 'http://gpu-17:7071');
    assert.match(wildcard.warning!, /--advertise/);
  });
});
