// Fetching with peers against peers that lie or fail: a fake holder registered with a real
// control plane, whose "agent" is a test origin with fault injection serving the blob at
// /v1/blobs/<digest>. Each fetch must end with the exact bytes, taking from the origin what
// the bad peer would not give, and never hang on it.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type Fault, OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { LoomError } from '../../src/core/errors.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const PIECE = 16 * 1024 * 1024;
const SIZE = 2 * PIECE + 54321; // three pieces
const content = randomContent(SIZE);
const pieces: string[] = [];
for (let at = 0; at < SIZE; at += PIECE)
  pieces.push(
    createHash('sha256')
      .update(content.bytes.subarray(at, at + PIECE))
      .digest('hex'),
  );

const closers: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});
const dir = tempDir('loom-peer-liars-');

const origin = await new OriginServer().listen();
closers.push(() => origin.close());
origin.setFile('/models/m.bin', content.bytes);
const URL_ = origin.url('/models/m.bin');

async function send(cp: string, method: string, path: string, body: unknown): Promise<void> {
  const res = await fetch(`${cp}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.text()}`);
}

/** A control plane that knows the blob (manifest, source) and one holder: `liar`. */
async function fleetWithLiar(liar: OriginServer): Promise<string> {
  const store = new SqliteStore(':memory:');
  const app = await buildControlPlane({ store, leaseTtlMs: 2_000 });
  const cp = await app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(async () => {
    await app.close();
    await store.close();
  });
  await send(cp, 'PUT', `/v1/blobs/${content.sha256}`, {
    size: SIZE,
    pieceSize: PIECE,
    pieces,
    verifiedAgainst: 'first-origin-fetch',
  });
  await send(cp, 'PUT', '/v1/sources', { key: sourceKey(URL_), digest: content.sha256 });
  await send(cp, 'PUT', '/v1/nodes/liar', { url: liar.origin, freeUploadSlots: 4 });
  await send(cp, 'PUT', `/v1/blobs/${content.sha256}/replicas/liar`, { complete: true });
  return cp;
}

async function liarWith(bytes: Buffer, fault?: Fault): Promise<OriginServer> {
  const liar = await new OriginServer({ fault: fault && (() => fault) }).listen();
  closers.push(() => liar.close());
  liar.setFile(`/v1/blobs/${content.sha256}`, bytes);
  return liar;
}

let runs = 0;
async function fetchFresh(cp: string, useOrigin = true) {
  const id = `fresh-${++runs}`;
  const out = join(dir, `${id}.bin`);
  const planner = new PeerPlanner({
    controlPlane: cp,
    nodeId: id,
    useOrigin,
    stallTimeoutMs: 1_000,
    followerWaitMs: 2_000,
  });
  const result = await fetchCached(URL_, out, {
    cacheDir: join(dir, id),
    planner,
    retryBaseDelay: 5,
    retryMaxDelay: 50,
  });
  return {
    out,
    bySource: (result as unknown as { bytesBySource: Record<string, number> }).bytesBySource,
    dropped: (result as unknown as { droppedSources: Array<{ id: string; code: string }> }).droppedSources,
  };
}

// A peer that holds the download up fails its test by this timeout instead of hanging it.
const HANG = { timeout: 40_000 };

describe('fetch with a lying or failing peer', () => {
  it('a peer serving flipped bytes is dropped and the output is exact', HANG, async () => {
    const bad = Buffer.from(content.bytes);
    bad[PIECE + 7] ^= 0xff;
    const cp = await fleetWithLiar(await liarWith(bad));
    origin.resetStats();
    const run = await fetchFresh(cp);
    assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.equal(run.dropped.find((d) => d.id === 'liar')?.code, 'LOOM_ERR_DIGEST_MISMATCH');
    assert.ok(origin.bytesServed >= SIZE - PIECE - 54321, 'the origin served what the liar could not');
  });

  it('a peer answering with a wrong Content-Range is passed over and the output is exact', HANG, async () => {
    const cp = await fleetWithLiar(await liarWith(content.bytes, { kind: 'content-range', value: 'bytes 0-99/100' }));
    const run = await fetchFresh(cp);
    assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.equal(run.bySource.liar ?? 0, 0);
  });

  it(
    'a peer answering 200 with the whole blob instead of 206 is passed over and the output is exact',
    HANG,
    async () => {
      const cp = await fleetWithLiar(await liarWith(content.bytes, { kind: 'ignore-range' }));
      const run = await fetchFresh(cp);
      assert.equal(await sha256OfFile(run.out), content.sha256);
      assert.equal(run.bySource.liar ?? 0, 0);
    },
  );

  it('a peer that stalls mid-body costs a retry elsewhere and the output is exact', HANG, async () => {
    const cp = await fleetWithLiar(await liarWith(content.bytes, { kind: 'stall', afterBytes: 64 * 1024 }));
    const run = await fetchFresh(cp);
    assert.equal(await sha256OfFile(run.out), content.sha256);
  });

  it(
    'a peer killed mid-transfer (reset mid-body, then refused) costs only a retry and the output is exact',
    HANG,
    async () => {
      let killed = false;
      const dying: OriginServer = await new OriginServer({
        fault: () => {
          if (killed) return undefined;
          killed = true;
          // The process dies during this response: its sockets reset, its port refuses.
          setTimeout(() => void dying.close(), 20);
          return { kind: 'reset', afterBytes: 1024 * 1024 };
        },
      }).listen();
      closers.push(() => dying.close());
      dying.setFile(`/v1/blobs/${content.sha256}`, content.bytes);
      const cp = await fleetWithLiar(dying);
      origin.resetStats();
      const run = await fetchFresh(cp);
      assert.equal(await sha256OfFile(run.out), content.sha256);
      assert.ok(killed, 'the peer was asked and died');
      assert.ok(origin.bytesServed <= SIZE, `the origin sent ${origin.bytesServed} bytes: at most one copy`);
    },
  );

  it('a peer refusing every request with 503 is passed over and the output is exact', HANG, async () => {
    const cp = await fleetWithLiar(
      await liarWith(content.bytes, { kind: 'status', status: 503, headers: { 'retry-after': '1' } }),
    );
    const run = await fetchFresh(cp);
    assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.equal(run.bySource.liar ?? 0, 0);
  });

  it('a peer that announced the blob but answers 404 is passed over and the output is exact', HANG, async () => {
    const cp = await fleetWithLiar(await liarWith(content.bytes, { kind: 'status', status: 404 }));
    const run = await fetchFresh(cp);
    assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.equal(run.bySource.liar ?? 0, 0);
  });

  it('a peer that trickles bytes is dropped for the origin and the output is exact', HANG, async () => {
    const cp = await fleetWithLiar(await liarWith(content.bytes, { kind: 'slow', bytesPerSecond: 64 * 1024 }));
    const run = await fetchFresh(cp);
    assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.ok((run.bySource.origin ?? 0) > SIZE / 2, JSON.stringify(run.bySource));
  });

  it('--no-origin with an honest peer takes every byte from it and none from the origin', HANG, async () => {
    const cp = await fleetWithLiar(await liarWith(content.bytes));
    origin.resetStats();
    const run = await fetchFresh(cp, false);
    assert.equal(await sha256OfFile(run.out), content.sha256);
    assert.equal(run.bySource.liar, SIZE);
    assert.equal(origin.bytesServed, 0);
  });

  // The planner waits up to 60 s for another holder to appear before it gives up.
  it('--no-origin with only a lying peer fails clearly and keeps nothing', { timeout: 90_000 }, async () => {
    const bad = Buffer.from(content.bytes);
    bad[3] ^= 0xff;
    const cp = await fleetWithLiar(await liarWith(bad));
    await assert.rejects(fetchFresh(cp, false), (err: unknown) => {
      assert.ok(err instanceof LoomError, String(err));
      // No source left, or the liar's bad piece named: either way clear, and nothing kept.
      assert.ok(['LOOM_ERR_NO_SOURCE', 'LOOM_ERR_DIGEST_MISMATCH'].includes(err.code), err.code);
      return true;
    });
  });
});
