// What the fleet trusts under per-node credentials (`--cluster-secret`), end to end on
// loopback: a real control plane (SQLite) with an admin token and a cluster secret, real
// agents each with its own node token and a shared peer token, a real origin that counts its
// bytes, and fetchCached with the peer planner, as `loom fetch --control-plane` runs it.
// - A node cannot point a URL at bytes of its own through a lease on its own digest.
// - A known digest whose manifest is gone (or never was) never hangs a fetch: the holders
//   serve it, the whole file checked against the digest, bad bytes fetched from the origin;
//   a pinned follower whose lease holder died takes the lease over though the URL is mapped.
// - The agent publishes manifests as its node (X-Loom-Node), so a restarted agent restores one.
import assert from 'node:assert/strict';
import { chmodSync, closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { nodeToken } from '../../src/control-plane/auth.js';
import { manifestFingerprint } from '../../src/core/manifest.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { Agent } from '../../src/peer/agent.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { OriginServer } from '../support/origin-server.js';
import { randomContent, sha256Of, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import { openCache } from '../../src/cache/cache-admin.js';
import {
  closersRunAfterAll,
  controlPlaneFront,
  putBlob,
  putPartial,
  startTestAgent,
  startTestControlPlane,
} from './peer-fixtures.js';
import { ensureLayout } from '../../src/cache/blob-store.js';

const SECRET = 'cluster-secret-for-trust-tests-0123';
const ADMIN = 'admin-token-for-trust-tests-01234567';
const PEER_TOKEN = 'peer-token-for-trust-tests-0123456';
const SIZE = 20 * 1024 * 1024 + 12345; // two pieces of 16 MiB
const good = randomContent(SIZE);
const evil = randomContent(SIZE);
const closers = closersRunAfterAll();
// Registered after the closers: agents stop before their caches are removed.
const dir = tempDir('loom-peer-trust-');

const origin = await new OriginServer().listen();
closers.push(() => origin.close());
let files = 0;
/** A new URL on the origin serving the good bytes (each test its own source key). */
function newUrl(): string {
  const path = `/models/m-${++files}.bin`;
  origin.setFile(path, good.bytes);
  return origin.url(path);
}

const admin = { authorization: `Bearer ${ADMIN}` };
const as = (id: string) => ({ authorization: `Bearer ${nodeToken(SECRET, id)}`, 'x-loom-node': id });

async function securedControlPlane(): Promise<string> {
  const store = new SqliteStore(':memory:');
  const app = await buildControlPlane({ store, token: ADMIN, clusterSecret: SECRET, leaseTtlMs: 2_000 });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(async () => {
    await app.close();
    await store.close();
  });
  return url;
}

async function call(
  cp: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${cp}${path}`, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

interface Node {
  id: string;
  cacheDir: string;
  agent: Agent;
  log: string[];
}

async function startAgent(cp: string, id: string, cacheDir: string, log: string[]): Promise<Agent> {
  const agent = await Agent.start({
    controlPlane: cp,
    cacheRoot: cacheDir,
    nodeId: id,
    listen: { host: '127.0.0.1', port: 0 },
    token: nodeToken(SECRET, id),
    peerToken: PEER_TOKEN,
    scanIntervalMs: 200,
    log: (level, message) => log.push(`${level}: ${message}`),
  });
  closers.push(() => agent.stop(0));
  await waitFor(`${id} registered`, () => agent.isRegistered);
  return agent;
}

async function node(cp: string, id: string): Promise<Node> {
  const cacheDir = join(dir, `${id}-${Math.random().toString(36).slice(2)}`);
  const log: string[] = [];
  return { id, cacheDir, log, agent: await startAgent(cp, id, cacheDir, log) };
}

let outs = 0;
async function fetchOn(
  n: Node,
  cp: string,
  url: string,
  extra: { sha256?: string; messages?: string[]; useOrigin?: boolean } = {},
): Promise<{ out: string; bytesBySource: Record<string, number> }> {
  const out = join(dir, `out-${++outs}.bin`);
  const planner = new PeerPlanner({
    controlPlane: cp,
    nodeId: n.id,
    token: nodeToken(SECRET, n.id),
    agentToken: PEER_TOKEN,
    useOrigin: extra.useOrigin,
    followerWaitMs: 3_000,
    publishWaitMs: 10_000,
    onStatus: (m) => extra.messages?.push(m),
  });
  const result = await fetchCached(url, out, {
    cacheDir: n.cacheDir,
    planner,
    sha256: extra.sha256,
    retryBaseDelay: 5,
    retryMaxDelay: 50,
    onStatus: (m) => extra.messages?.push(m),
  });
  return { out, bytesBySource: (result as unknown as { bytesBySource?: Record<string, number> }).bytesBySource ?? {} };
}

async function completeHolder(cp: string, digest: string, id: string): Promise<void> {
  await waitFor(`${id} announced as a complete holder of ${digest.slice(0, 12)}`, async () => {
    const answer = await call(cp, 'GET', `/v1/blobs/${digest}/peers`, admin);
    return (answer.body as { peers: Array<{ id: string; complete: boolean }> }).peers.some(
      (p) => p.id === id && p.complete,
    );
  });
}

const mappedDigest = async (cp: string, url: string): Promise<unknown> =>
  (await call(cp, 'GET', `/v1/sources?key=${encodeURIComponent(sourceKey(url))}`, admin)).body;

const PIECE_SIZE = 16 * 1024 * 1024;
const piecesOf = (bytes: Buffer): string[] => [bytes.subarray(0, PIECE_SIZE), bytes.subarray(PIECE_SIZE)].map(sha256Of);

/**
 * A forger: it holds other bytes under the good digest's name and is first to publish a
 * manifest for that digest listing its own pieces (first writer wins).
 */
async function forger(cp: string): Promise<Node> {
  return evilHolder(cp, 'forger', true);
}

/**
 * Node `id` holding other bytes under the good digest's name, announced as a complete holder;
 * with `forge`, first to publish a manifest for that digest listing its own pieces.
 */
async function evilHolder(cp: string, id: string, forge: boolean): Promise<Node> {
  const bad = await node(cp, id);
  const blob = join(cacheLayout(bad.cacheDir).blobs, good.sha256);
  await ensureLayout(cacheLayout(bad.cacheDir));
  writeFileSync(blob, evil.bytes);
  if (forge) {
    const forged = {
      size: SIZE,
      pieceSize: PIECE_SIZE,
      pieces: piecesOf(evil.bytes),
      verifiedAgainst: 'sha256-pinned',
    };
    assert.equal((await call(cp, 'PUT', `/v1/blobs/${good.sha256}`, as(id), forged)).status, 201);
  }
  const cache = await openCache(bad.cacheDir);
  try {
    cache.index.recordFetch(`https://models.example/${good.sha256}`, good.sha256, SIZE, {});
  } finally {
    cache.close();
  }
  await completeHolder(cp, good.sha256, id);
  return bad;
}

/** Reports the control plane answered 202, of either kind (its Prometheus counter). */
async function reportsMade(cp: string): Promise<number> {
  const text = await (await fetch(`${cp}/metrics`)).text();
  const line = text
    .split('\n')
    .find(
      (l) =>
        l.startsWith('loom_cp_http_requests_total{') && l.includes('route="/v1/reports"') && l.includes('status="202"'),
    );
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The piece list of the fleet's manifest for the good digest; undefined when it has none. */
async function fleetPieces(cp: string): Promise<string[] | undefined> {
  const answer = await call(cp, 'GET', `/v1/blobs/${good.sha256}`, admin);
  return answer.status === 200 ? (answer.body as { pieces: string[] }).pieces : undefined;
}

/**
 * Pinned fetches on new nodes `ids` while the fleet has a forged manifest of the good digest:
 * each gets the good bytes and reports the manifest; the third report drops it for that
 * node's manifest of the pinned bytes. Each then holds the blob. Returns each fetch's origin bytes.
 */
async function pinnedFetchesDropIt(cp: string, url: string, ids: string[]): Promise<number[]> {
  const originBytes: number[] = [];
  for (const [i, id] of ids.entries()) {
    const victim = await node(cp, id);
    origin.resetStats();
    const messages: string[] = [];
    const { out } = await fetchOn(victim, cp, url, { sha256: good.sha256, messages });
    assert.equal(await sha256OfFile(out), good.sha256);
    originBytes.push(origin.bytesServed);
    assert.ok(
      messages.some((m) => /the fleet's manifest of [0-9a-f]{64} lists the pieces of other bytes.*reported/.test(m)),
      messages.join('\n'),
    );
    // Below the threshold the forged manifest stays (its publisher's word against two
    // nodes'); the third report drops it, and that node's own manifest takes its place.
    assert.deepEqual(await fleetPieces(cp), i < 2 ? piecesOf(evil.bytes) : piecesOf(good.bytes), `after ${id}`);
    await completeHolder(cp, good.sha256, id);
  }
  return originBytes;
}

describe('fleet trust with per-node credentials', () => {
  it('a node cannot map a URL to its own bytes with a lease on its own digest; the victim gets the origin bytes', async () => {
    const cp = await securedControlPlane();
    const url = newUrl();
    const bad = await node(cp, 'evil');
    await putBlob(bad.cacheDir, evil.bytes);
    await completeHolder(cp, evil.sha256, 'evil');
    // What finding 1's attacker did: a lease on its own digest, a manifest of its own, the mapping.
    const lease = await call(cp, 'POST', `/v1/blobs/${evil.sha256}/leases`, as('evil'), { node: 'evil' });
    const token = (lease.body as { token: string }).token;
    const manifest = { size: SIZE, pieceSize: SIZE, pieces: [evil.sha256], verifiedAgainst: 'sha256-pinned' };
    assert.equal((await call(cp, 'PUT', `/v1/blobs/${evil.sha256}`, as('evil'), manifest)).status, 201);
    const pieces = { lease: token, size: SIZE, pieceSize: SIZE, pieces: [evil.sha256] };
    assert.equal((await call(cp, 'PUT', `/v1/sources/${evil.sha256}/pieces`, as('evil'), pieces)).status, 200);
    const mapping = await call(cp, 'PUT', '/v1/sources', as('evil'), {
      key: sourceKey(url),
      digest: evil.sha256,
      lease: token,
    });
    assert.equal(mapping.status, 403, JSON.stringify(mapping.body));
    assert.equal((await call(cp, 'GET', `/v1/sources?key=${encodeURIComponent(sourceKey(url))}`, admin)).status, 404);

    const victim = await node(cp, 'victim');
    origin.resetStats();
    const { out } = await fetchOn(victim, cp, url);
    assert.equal(await sha256OfFile(out), good.sha256, "the origin's bytes, not the evil node's");
    assert.equal(origin.bytesServed, SIZE);
    // The victim led the fetch from the origin under the source's lease: it maps the URL.
    assert.deepEqual(await mappedDigest(cp, url), { key: sourceKey(url), digest: good.sha256 });
  });

  it('a manifest forged for a pinned digest costs an origin copy, never the bytes: the whole file is checked', async () => {
    const cp = await securedControlPlane();
    const url = newUrl();
    await forger(cp);

    const victim = await node(cp, 'pinned-victim');
    origin.resetStats();
    const { out } = await fetchOn(victim, cp, url, { sha256: good.sha256 });
    assert.equal(await sha256OfFile(out), good.sha256, 'the pinned bytes, from the origin');
    assert.equal(origin.bytesServed, SIZE);
  });

  it(
    'a forged manifest proved wrong by 3 pinned nodes is dropped for theirs; the 4th fetch takes the good bytes from peers',
    { timeout: 120_000 },
    async () => {
      const cp = await securedControlPlane();
      const url = newUrl();
      await forger(cp);
      const originBytes = await pinnedFetchesDropIt(cp, url, ['v1', 'v2', 'v3']);
      assert.deepEqual(originBytes, [SIZE, SIZE, SIZE], 'a whole origin copy after the forged bytes');
      const manifest = await call(cp, 'GET', `/v1/blobs/${good.sha256}`, admin);
      assert.equal((manifest.body as { verifiedAgainst: string }).verifiedAgainst, 'sha256-pinned');
      // The forged manifest failed the honest holders' pieces too (v1's in v2's and v3's
      // fetches): those reports were held until the pin vouched for the manifest, and then
      // forgotten. Only the three manifest reports were made.
      assert.equal(await reportsMade(cp), 3);

      const next = await node(cp, 'v4');
      origin.resetStats();
      const { out, bytesBySource } = await fetchOn(next, cp, url, { sha256: good.sha256 });
      assert.equal(await sha256OfFile(out), good.sha256);
      assert.equal(origin.bytesServed, 0, 'no origin copy: the fleet has a good manifest again');
      assert.ok(
        (bytesBySource.v1 ?? 0) + (bytesBySource.v2 ?? 0) + (bytesBySource.v3 ?? 0) >= SIZE,
        JSON.stringify(bytesBySource),
      );
    },
  );

  it(
    'a forged manifest with no bytes behind it is proved wrong by the origin copies it costs: 3 pinned nodes drop it',
    // Each fetch met honest holders the manifest fails, and the origin too: it waited the
    // follower's 60 s for a holder that might match before (no new one ever can).
    { timeout: 60_000 },
    async () => {
      const cp = await securedControlPlane();
      const url = newUrl();
      // The forger publishes a piece list for the good digest and serves nothing: no node's
      // pieces ever all match it, only the origin's whole file (which passes the pin) refutes it.
      await node(cp, 'forger');
      const manifest = {
        size: SIZE,
        pieceSize: PIECE_SIZE,
        pieces: piecesOf(evil.bytes),
        verifiedAgainst: 'sha256-pinned',
      };
      assert.equal((await call(cp, 'PUT', `/v1/blobs/${good.sha256}`, as('forger'), manifest)).status, 201);
      await pinnedFetchesDropIt(cp, url, ['w1', 'w2', 'w3']);
      const next = await node(cp, 'w4');
      origin.resetStats();
      const { out } = await fetchOn(next, cp, url, { sha256: good.sha256 });
      assert.equal(await sha256OfFile(out), good.sha256);
      assert.equal(origin.bytesServed, 0, 'no origin copy: the fleet has a good manifest again');
    },
  );

  it(
    "colluders that drop a mapped URL's good manifest and publish their own cannot make an unpinned fetch take their bytes",
    { timeout: 90_000 },
    async () => {
      const cp = await securedControlPlane();
      const url = newUrl();
      // An honest leader maps the URL to the good digest, with its manifest.
      const a = await node(cp, 'a');
      await fetchOn(a, cp, url);
      assert.deepEqual(await mappedDigest(cp, url), { key: sourceKey(url), digest: good.sha256 });
      await completeHolder(cp, good.sha256, 'a');
      // Three colluding credentials report the good manifest: dropped. The forger is one of
      // its reporters, so it may publish the next one: the pieces of its own bytes.
      const fingerprint = manifestFingerprint({ size: SIZE, pieceSize: PIECE_SIZE, pieces: piecesOf(good.bytes) });
      for (const id of ['forger', 'c2', 'c3']) {
        const body = { digest: good.sha256, kind: 'manifest', manifest: fingerprint };
        assert.equal((await call(cp, 'POST', '/v1/reports', as(id), body)).status, 202);
      }
      assert.equal(await fleetPieces(cp), undefined, 'dropped');
      await forger(cp);
      assert.deepEqual(await fleetPieces(cp), piecesOf(evil.bytes));

      // Not pinned: the digest is the mapping's, the manifest the forger's. Its pieces match
      // the forger's bytes; the whole file is checked against the mapped digest all the same.
      const victim = await node(cp, 'victim');
      const { out } = await fetchOn(victim, cp, url);
      assert.equal(await sha256OfFile(out), good.sha256, "the mapped digest's bytes, never the forger's");
      // The colluders' 3 reports and the victim's of the forged manifest; none of the honest
      // holder a, whose pieces failed the forged list (held until the whole file vouched).
      assert.equal(await reportsMade(cp), 4);
    },
  );

  it('one lying node cannot drop a good manifest: it counts once, and only as itself', async () => {
    const cp = await securedControlPlane();
    const url = newUrl();
    const a = await node(cp, 'a');
    await fetchOn(a, cp, url, { sha256: good.sha256 });
    await completeHolder(cp, good.sha256, 'a');
    const honest = piecesOf(good.bytes);
    assert.deepEqual(await fleetPieces(cp), honest);
    const fingerprint = manifestFingerprint({ size: SIZE, pieceSize: PIECE_SIZE, pieces: honest });
    const report = (reporter?: string) =>
      call(cp, 'POST', '/v1/reports', as('liar'), {
        digest: good.sha256,
        kind: 'manifest',
        manifest: fingerprint,
        ...(reporter !== undefined && { reporter }),
      });
    for (let i = 0; i < 5; i++) {
      const answer = await report();
      assert.equal(answer.status, 202, JSON.stringify(answer.body));
      assert.deepEqual(
        [(answer.body as { reports: number }).reports, (answer.body as { dropped: boolean }).dropped],
        [1, false],
      );
    }
    for (const other of ['x1', 'x2']) assert.equal((await report(other)).status, 403, 'a node reports only as itself');
    assert.deepEqual(await fleetPieces(cp), honest, 'the good manifest stays');

    const b = await node(cp, 'b');
    origin.resetStats();
    const { out, bytesBySource } = await fetchOn(b, cp, url, { sha256: good.sha256 });
    assert.equal(await sha256OfFile(out), good.sha256);
    assert.equal(origin.bytesServed, 0);
    assert.equal(bytesBySource.a, SIZE);
  });

  it('an honest leader maps the source, pinned or not, and the next node takes it from peers alone', async () => {
    const cp = await securedControlPlane();
    const [a, b, c] = [await node(cp, 'a'), await node(cp, 'b'), await node(cp, 'c')];
    // A pinned fetch leads under the digest's lease, and maps the URL under the source's own.
    const pinned = newUrl();
    origin.resetStats();
    await fetchOn(c, cp, pinned, { sha256: good.sha256 });
    assert.equal(origin.bytesServed, SIZE);
    assert.deepEqual(await mappedDigest(cp, pinned), { key: sourceKey(pinned), digest: good.sha256 });
    // Another URL of the same bytes, not pinned: its own leader, its own mapping.
    const plain = newUrl();
    await fetchOn(a, cp, plain);
    assert.deepEqual(await mappedDigest(cp, plain), { key: sourceKey(plain), digest: good.sha256 });
    await completeHolder(cp, good.sha256, 'a');
    origin.resetStats();
    const { out, bytesBySource } = await fetchOn(b, cp, plain);
    assert.equal(await sha256OfFile(out), good.sha256);
    assert.equal(origin.bytesServed, 0);
    assert.equal((bytesBySource.a ?? 0) + (bytesBySource.c ?? 0), SIZE);
  });
});

/** A fetch without the fleet into `n`'s cache (`loom fetch URL` with no control plane). */
async function plainFetch(n: Node, url: string): Promise<void> {
  await fetchCached(url, join(dir, `plain-${++outs}.bin`), { cacheDir: n.cacheDir });
}

describe('a known digest whose fleet has no manifest for it', () => {
  it(
    'a pinned fetch takes a blob fetched without the fleet from its holder, and publishes its manifest',
    { timeout: 60_000 },
    async () => {
      const cp = await securedControlPlane();
      const url = newUrl();
      const [a, b] = [await node(cp, 'a'), await node(cp, 'b')];
      await plainFetch(a, url);
      await completeHolder(cp, good.sha256, 'a');
      assert.equal((await call(cp, 'GET', `/v1/blobs/${good.sha256}`, admin)).status, 404);

      origin.resetStats();
      const messages: string[] = [];
      const { out, bytesBySource } = await fetchOn(b, cp, url, { sha256: good.sha256, messages });
      assert.equal(await sha256OfFile(out), good.sha256);
      assert.equal(origin.bytesServed, 0, 'every byte from the holder');
      assert.equal(bytesBySource.a, SIZE);
      assert.ok(
        messages.some((m) => /no manifest for it: taking it from 1 peer/.test(m)),
        messages.join('\n'),
      );
      assert.ok(!messages.some((m) => /another node is fetching it from the origin/.test(m)), 'no false status');
      const manifest = await call(cp, 'GET', `/v1/blobs/${good.sha256}`, admin);
      assert.equal(manifest.status, 200, 'the node that checked the whole file published its manifest');
      assert.equal((manifest.body as { size: number }).size, SIZE);
    },
  );

  it(
    'after an admin removes the manifest, the mapped URL is taken from its holder again',
    { timeout: 60_000 },
    async () => {
      const cp = await securedControlPlane();
      const url = newUrl();
      const [a, b] = [await node(cp, 'a'), await node(cp, 'b')];
      await fetchOn(a, cp, url);
      await completeHolder(cp, good.sha256, 'a');
      assert.equal((await call(cp, 'DELETE', `/v1/blobs/${good.sha256}`, admin)).status, 204);

      origin.resetStats();
      const { out, bytesBySource } = await fetchOn(b, cp, url);
      assert.equal(await sha256OfFile(out), good.sha256);
      assert.equal(origin.bytesServed, 0);
      assert.equal(bytesBySource.a, SIZE);
      assert.equal((await call(cp, 'GET', `/v1/blobs/${good.sha256}`, admin)).status, 200);
    },
  );

  it(
    'bytes from a holder that miss the digest are fetched again from the origin alone',
    { timeout: 60_000 },
    async () => {
      const cp = await securedControlPlane();
      const url = newUrl();
      const [bad, b] = [await node(cp, 'bad'), await node(cp, 'b')];
      await plainFetch(bad, url);
      // The holder's blob is damaged in place (a bad disk): it still announces it complete.
      const blob = join(cacheLayout(bad.cacheDir).blobs, good.sha256);
      chmodSync(blob, 0o644);
      const fd = openSync(blob, 'r+');
      writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, 17 * 1024 * 1024);
      closeSync(fd);
      await completeHolder(cp, good.sha256, 'bad');

      origin.resetStats();
      const messages: string[] = [];
      const { out } = await fetchOn(b, cp, url, { sha256: good.sha256, messages });
      assert.equal(await sha256OfFile(out), good.sha256);
      assert.equal(origin.bytesServed, SIZE, 'one whole copy from the origin');
      assert.ok(
        messages.some((m) => /sha256 mismatch .*fetching it from the origin alone/.test(m)),
        messages.join('\n'),
      );
      // No manifest from the bad bytes: the one the origin's bytes gave, checked against the pin.
      assert.deepEqual(await fleetPieces(cp), piecesOf(good.bytes));

      // With --no-origin the mismatch is the fetch's failure: the origin is not asked (b, a
      // good holder now, leaves, so the damaged one is the only holder; the manifest is
      // removed, so the whole file is what is checked again).
      await b.agent.stop(0);
      assert.equal((await call(cp, 'DELETE', `/v1/blobs/${good.sha256}`, admin)).status, 204);
      const c = await node(cp, 'c');
      origin.resetStats();
      await assert.rejects(fetchOn(c, cp, url, { sha256: good.sha256, useOrigin: false }), {
        code: 'LOOM_ERR_DIGEST_MISMATCH',
      });
      assert.equal(origin.bytesServed, 0);
    },
  );
});

/**
 * A front for control plane `cp` that answers 503 (the store unreachable) to the first
 * `refusals` manifest writes (PUT /v1/blobs/:digest) and passes everything else through.
 */
async function refusingFront(cp: string, refusals: number): Promise<{ url: string; refused: () => number }> {
  let refused = 0;
  const front = await controlPlaneFront(cp, closers, (method, path) => {
    if (method !== 'PUT' || !/^\/v1\/blobs\/[0-9a-f]{64}$/.test(path) || refused >= refusals) return undefined;
    refused++;
    return { status: 503, body: { error: { code: 'LOOM_ERR_STORE_UNAVAILABLE', message: 'store unreachable' } } };
  });
  return { url: front.url, refused: () => refused };
}

describe('a pinned follower whose lease holder is gone, the URL mapped', () => {
  it('takes the free lease over and fetches what no peer holds from the origin', { timeout: 60_000 }, async () => {
    // An open control plane: the mapping is made directly (as an older control plane allowed).
    const cp = (await startTestControlPlane(closers)).url;
    const url = newUrl();
    // A pinned download that died after its first piece: its agent still serves that piece.
    const deadDir = join(dir, 'dead');
    await ensureLayout(cacheLayout(deadDir));
    const partial = putPartial(deadDir, good.bytes, 16 * 1024 * 1024, [0]);
    // It published its first piece's digest under its lease on the digest, which then lapsed.
    const lease = await call(cp, 'POST', `/v1/blobs/${good.sha256}/leases`, {}, { node: 'dead' });
    const token = (lease.body as { token: string }).token;
    const published = { lease: token, size: SIZE, pieceSize: partial.pieceSize, pieces: partial.pieces.slice(0, 1) };
    assert.equal((await call(cp, 'PUT', `/v1/sources/${good.sha256}/pieces`, {}, published)).status, 200);
    await startTestAgent(closers, cp, 'dead', deadDir);
    await call(cp, 'PUT', '/v1/sources', {}, { key: sourceKey(url), digest: good.sha256 });
    await waitFor('the partial announced', async () => {
      const answer = await call(cp, 'GET', `/v1/blobs/${good.sha256}/peers`, {});
      return (answer.body as { peers: unknown[] }).peers.length === 1;
    });
    const b = { id: 'b', cacheDir: join(dir, 'b-open') };
    origin.resetStats();
    const out = join(dir, `out-${++outs}.bin`);
    await fetchCached(url, out, {
      cacheDir: b.cacheDir,
      sha256: good.sha256,
      planner: new PeerPlanner({ controlPlane: cp, nodeId: b.id, followerWaitMs: 3_000, publishWaitMs: 10_000 }),
      retryBaseDelay: 5,
      retryMaxDelay: 50,
    });
    assert.equal(await sha256OfFile(out), good.sha256);
    assert.ok(origin.bytesServed < SIZE, `the piece the dead node holds came from it (${origin.bytesServed})`);
  });
});

describe('the agent publishes manifests under per-node credentials', () => {
  it('a restarted agent publishes the manifest an admin removed', async () => {
    const cp = await securedControlPlane();
    const url = newUrl();
    const a = await node(cp, 'a');
    await fetchOn(a, cp, url);
    await completeHolder(cp, good.sha256, 'a');
    assert.equal((await call(cp, 'DELETE', `/v1/blobs/${good.sha256}`, admin)).status, 204);
    await a.agent.stop(0);
    await startAgent(cp, 'a', a.cacheDir, a.log);
    await waitFor('the manifest published again', async () => {
      return (await call(cp, 'GET', `/v1/blobs/${good.sha256}`, admin)).status === 200;
    });
    assert.ok(!a.log.some((line) => /refused the manifest/.test(line)), a.log.join('\n'));
  });

  it('a manifest the control plane refused is published at the next full announcement', async () => {
    const cp = await securedControlPlane();
    const front = await refusingFront(cp, 1);
    const url = newUrl();
    const a = await node(cp, 'a');
    await fetchOn(a, cp, url);
    await a.agent.stop(0);
    assert.equal((await call(cp, 'DELETE', `/v1/blobs/${good.sha256}`, admin)).status, 204);
    const log: string[] = [];
    const agent = await Agent.start({
      controlPlane: front.url,
      cacheRoot: a.cacheDir,
      nodeId: 'a',
      listen: { host: '127.0.0.1', port: 0 },
      token: nodeToken(SECRET, 'a'),
      peerToken: PEER_TOKEN,
      scanIntervalMs: 200,
      reannounceIntervalMs: 300,
      log: (level, message) => log.push(`${level}: ${message}`),
    });
    closers.push(() => agent.stop(0));
    await waitFor('the manifest published after a refusal', async () => {
      return (await call(cp, 'GET', `/v1/blobs/${good.sha256}`, admin)).status === 200;
    });
    assert.equal(front.refused(), 1);
    assert.ok(
      log.some((line) => /refused the manifest .*store unreachable/.test(line)),
      log.join('\n'),
    );
  });
});

describe('a pinned fetch that falls back to the origin alone after a liar was caught', () => {
  // With both its sources dropped, the plan fails at the engine's 60 s source wait.
  it(
    "reports the liar once the origin's copy proves the manifest its pieces failed",
    { timeout: 150_000 },
    async () => {
      // Its own origin: the first request of the victim's planned download (made once the
      // liar is dropped: a live holder's pieces are never asked of the origin) answers 404,
      // which fails the plan; the fetch from the origin alone that follows is served. A correct
      // manifest's failed pieces imply nothing of the whole file: only another failure (no
      // source left, as here; peers gone, an error) makes such a fetch fall back.
      let failNext = false;
      const flaky = await new OriginServer({
        fault: () => {
          if (!failNext) return undefined;
          failNext = false;
          return { kind: 'status', status: 404 };
        },
      }).listen();
      closers.push(() => flaky.close());
      flaky.setFile('/models/flaky.bin', good.bytes);
      const url = flaky.url('/models/flaky.bin');
      const cp = await securedControlPlane();
      // The good manifest, published by an honest node; the only holder is a liar serving
      // other bytes under the good digest.
      await node(cp, 'honest');
      const manifest = {
        size: SIZE,
        pieceSize: PIECE_SIZE,
        pieces: piecesOf(good.bytes),
        verifiedAgainst: 'sha256-pinned',
      };
      assert.equal((await call(cp, 'PUT', `/v1/blobs/${good.sha256}`, as('honest'), manifest)).status, 201);
      await evilHolder(cp, 'liar', false);
      assert.equal(await reportsMade(cp), 0);

      const victim = await node(cp, 'victim');
      const messages: string[] = [];
      failNext = true;
      flaky.resetStats();
      const { out } = await fetchOn(victim, cp, url, { sha256: good.sha256, messages });
      assert.equal(await sha256OfFile(out), good.sha256);
      assert.ok(
        messages.some((m) => /fetching it from the origin alone/.test(m)),
        `the plan failed and fell back:\n${messages.join('\n')}`,
      );
      assert.ok(
        messages.some((m) => /peer .* dropped: .*/.test(m)),
        `the liar was caught first:\n${messages.join('\n')}`,
      );
      // The liar's held report, sent once the origin's copy matched the pin with the manifest's pieces.
      assert.equal(await reportsMade(cp), 1, messages.join('\n'));
      assert.deepEqual(await fleetPieces(cp), piecesOf(good.bytes), 'the good manifest stays');
    },
  );
});
