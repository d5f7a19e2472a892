// Fetching with peers, end to end on loopback: a real control plane (SQLite), real agents
// each over its own node cache, a real origin that counts its bytes, and fetchCached with
// the peer planner, as `loom fetch --control-plane` runs it. Each test asserts the output's
// sha256 and where the bytes came from.
import assert from 'node:assert/strict';
import { chmodSync, closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { LoomError } from '../../src/core/errors.js';
import { Agent } from '../../src/peer/agent.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { randomContent, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import { startTestAgent, startTestControlPlane } from './peer-fixtures.js';

const SIZE = 40 * 1024 * 1024 + 12345; // three pieces of 16 MiB
const content = randomContent(SIZE);
const closers: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});
// Registered after the closers: agents stop before their caches are removed.
const dir = tempDir('loom-peer-fetch-');

const origin = await new OriginServer().listen();
closers.push(() => origin.close());
origin.setFile('/models/m.bin', content.bytes);
const URL_ = origin.url('/models/m.bin');

async function controlPlane(): Promise<string> {
  return (await startTestControlPlane(closers)).url;
}

interface Node {
  id: string;
  cacheDir: string;
  agent: Agent;
}

let nodes = 0;
async function node(cp: string): Promise<Node> {
  const id = `node-${++nodes}`;
  const cacheDir = join(dir, id);
  return { id, cacheDir, agent: await startTestAgent(closers, cp, id, cacheDir) };
}

function fetchOn(
  n: Node,
  cp: string,
  extra: { useOrigin?: boolean; messages?: string[]; url?: string; followerWaitMs?: number } = {},
) {
  const out = join(dir, `${n.id}-${Math.random().toString(36).slice(2)}.bin`);
  const planner = new PeerPlanner({
    controlPlane: cp,
    nodeId: n.id,
    useOrigin: extra.useOrigin,
    followerWaitMs: extra.followerWaitMs ?? 3_000,
    publishWaitMs: 10_000,
    onStatus: (m) => extra.messages?.push(m),
  });
  return fetchCached(extra.url ?? URL_, out, {
    cacheDir: n.cacheDir,
    planner,
    retryBaseDelay: 5,
    retryMaxDelay: 50,
    onStatus: (m) => extra.messages?.push(m),
  }).then((result) => ({ result, out }));
}

async function holders(cp: string, digest: string): Promise<Array<{ id: string; complete: boolean }>> {
  const res = await fetch(`${cp}/v1/blobs/${digest}/peers`);
  return ((await res.json()) as { peers: Array<{ id: string; complete: boolean }> }).peers;
}

describe('fetch with peers', () => {
  it('a second node takes every byte from the first node and none from the origin', async () => {
    const cp = await controlPlane();
    const [a, b] = [await node(cp), await node(cp)];
    origin.resetStats();
    const first = await fetchOn(a, cp);
    assert.equal(await sha256OfFile(first.out), content.sha256);
    assert.equal(origin.bytesServed, SIZE, 'the first node fetched one copy from the origin');
    await waitFor('node-1 announced as complete', async () =>
      (await holders(cp, content.sha256)).some((h) => h.id === a.id && h.complete),
    );

    origin.resetStats();
    const second = await fetchOn(b, cp);
    assert.equal(await sha256OfFile(second.out), content.sha256);
    assert.equal(second.result.cache, 'miss');
    assert.equal(origin.bytesServed, 0, 'no body byte from the origin');
    const bySource = (second.result as unknown as { bytesBySource: Record<string, number> }).bytesBySource;
    assert.equal(bySource[a.id], SIZE);
  });

  it('catches a peer serving flipped bytes piece by piece, drops and reports it, and the output is exact', async () => {
    const cp = await controlPlane();
    const [bad, good, fresh] = [await node(cp), await node(cp), await node(cp)];
    await fetchOn(bad, cp);
    await fetchOn(good, cp);
    // The bad node's cached blob is damaged in place (a bad disk, a malicious root).
    const blob = join(cacheLayout(bad.cacheDir).blobs, content.sha256);
    chmodSync(blob, 0o644);
    const fd = openSync(blob, 'r+');
    writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, 17 * 1024 * 1024);
    closeSync(fd);

    origin.resetStats();
    const messages: string[] = [];
    const { result, out } = await fetchOn(fresh, cp, { messages });
    assert.equal(await sha256OfFile(out), content.sha256);
    const dropped = (result as unknown as { droppedSources: Array<{ id: string; code: string }> }).droppedSources;
    const culprit = dropped.find((d) => d.id === bad.id);
    // The bad node is only caught if it served the damaged piece; with two complete holders
    // it may not have been asked for it. Either way no bad byte reached the output.
    if (culprit) {
      assert.equal(culprit.code, 'LOOM_ERR_DIGEST_MISMATCH');
      assert.ok(messages.some((m) => m.includes(`peer ${bad.id} dropped`)));
    }
    assert.ok(origin.bytesServed <= 16 * 1024 * 1024, 'the origin served at most the piece refetched');
  });

  it('--no-origin with no peer holding the file fails clearly and fetches nothing', async () => {
    const cp = await controlPlane();
    const lonely = await node(cp);
    origin.resetStats();
    await assert.rejects(fetchOn(lonely, cp, { useOrigin: false }), (err: unknown) => {
      assert.ok(err instanceof LoomError);
      assert.equal(err.code, 'LOOM_ERR_NO_SOURCE');
      assert.match(err.message, /no-origin/);
      return true;
    });
    assert.equal(origin.bytesServed, 0);
  });

  it('three nodes starting at once make the origin send one copy', async () => {
    const cp = await controlPlane();
    const fleet = [await node(cp), await node(cp), await node(cp)];
    origin.resetStats();
    const runs = await Promise.all(fleet.map((n) => fetchOn(n, cp)));
    for (const run of runs) assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.ok(origin.bytesServed <= SIZE * 1.1, `origin sent ${origin.bytesServed} bytes for a ${SIZE}-byte file`);
    // The leader published each piece's digest under the source id as it hashed it: the
    // same digests as the manifest of the finished blob.
    const published = (await (await fetch(`${cp}/v1/sources/${sourceBlobId(sourceKey(URL_))}/pieces`)).json()) as {
      pieces: string[];
      pieceSize: number;
    };
    const manifest = (await (await fetch(`${cp}/v1/blobs/${content.sha256}`)).json()) as {
      pieces: string[];
      pieceSize: number;
    };
    assert.equal(manifest.pieces.length, 3);
    assert.deepEqual([published.pieceSize, published.pieces], [manifest.pieceSize, manifest.pieces]);
  });
});

/** Lease requests the control plane answered (granted or not), from its metrics. */
async function leaseAsks(cp: string): Promise<number> {
  const text = await (await fetch(`${cp}/metrics`)).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith('loom_cp_http_requests_total{') && l.includes('leases"') && l.includes('"POST"'));
  return Number(line?.split(' ').pop() ?? 0);
}

describe('fetch with peers, the leader slow to its first piece', () => {
  it('the others wait for its pieces as long as it holds the lease, never going to the origin', async () => {
    // Every origin request is held until the nodes without the lease have asked for it many
    // more times than fit in their followerWaitMs (each ask is 200 ms after the last): a
    // follower that gave up on a fixed wait would have gone to the origin by then. This is
    // what a loaded machine or a slow origin does to a leader's first 16 MiB piece.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const slow = await new OriginServer({ fault: () => ({ kind: 'hold', until: gate }) }).listen();
    closers.push(() => slow.close());
    slow.setFile('/models/slow.bin', content.bytes);
    const cp = await controlPlane();
    const fleet = [await node(cp), await node(cp), await node(cp)];
    const runs = Promise.all(
      fleet.map((n) => fetchOn(n, cp, { url: slow.url('/models/slow.bin'), followerWaitMs: 400 })),
    );
    await waitFor('the followers asking for the lease again and again', async () => (await leaseAsks(cp)) >= 13, 15_000)
      .catch(() => undefined)
      .finally(open);
    for (const run of await runs) assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.ok(slow.bytesServed <= SIZE * 1.1, `origin sent ${slow.bytesServed} bytes for a ${SIZE}-byte file`);
  });
});

describe('fetch with peers, the fleet knows the blob but nobody holds it', () => {
  it('three nodes at once: one fetches from the origin, the others take its pieces', async () => {
    const cp = await controlPlane();
    const first = await node(cp);
    await fetchOn(first, cp);
    // The only holder leaves: the control plane keeps the source's digest and manifest.
    await first.agent.stop(0);
    const fleet = [await node(cp), await node(cp), await node(cp)];
    origin.resetStats();
    const msgs: string[][] = fleet.map(() => []);
    const runs = await Promise.all(fleet.map((n, i) => fetchOn(n, cp, { messages: msgs[i] })));
    for (const run of runs) assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.ok(origin.bytesServed <= SIZE * 1.1, `origin sent ${origin.bytesServed} bytes for a ${SIZE}-byte file`);
  });
});
