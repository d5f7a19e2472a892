// The end of a fetch from peers, on a real control plane and real agents on loopback:
// - A follower whose pieces are all in the manifest its leader published asks the control
//   plane for that manifest once, and nothing after it (before, it asked for the source's
//   digest and the manifest again at the end: two round trips per follower fetch).
// - A follower whose whole-file check fails (its lease holder served and published pieces of
//   bytes that are not the digest it mapped the URL to) reports the peer that sent them, and
//   its error names it (before, nobody was reported).
// - A --no-origin fetch whose only holder serves bytes that miss the digest fails naming the
//   URL asked for and the holder, and reports it (before, the error named the holder's blob
//   URL, and nobody was reported).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { LoomError } from '../../src/core/errors.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { OriginServer } from '../support/origin-server.js';
import { randomContent, sha256Of, sha256OfFile, tempDir } from '../helpers/fixtures.js';
import {
  closersRunAfterAll,
  controlPlaneFront,
  controlPlaneRequest as send,
  standInLeaseHolder,
  startTestAgent,
  startTestControlPlane,
} from './peer-fixtures.js';

const MiB = 1024 * 1024;
const PIECE = 16 * MiB;
const SIZE = 2 * PIECE + 12345; // three pieces, hashed on the main thread
const content = randomContent(SIZE);
const closers = closersRunAfterAll();
const dir = tempDir('loom-whole-file-checks-');

const origin = await new OriginServer().listen();
closers.push(() => origin.close());
let files = 0;
function newUrl(): string {
  const path = `/models/w-${++files}.bin`;
  origin.setFile(path, content.bytes);
  return origin.url(path);
}

function fetchAs(
  cp: string,
  id: string,
  url: string,
  extra: { useOrigin?: boolean; sha256?: string; onStatus?: (m: string) => void } = {},
) {
  return fetchCached(url, join(dir, `${id}.bin`), {
    cacheDir: join(dir, id),
    sha256: extra.sha256,
    retryBaseDelay: 5,
    retryMaxDelay: 50,
    planner: new PeerPlanner({
      controlPlane: cp,
      nodeId: id,
      useOrigin: extra.useOrigin,
      stallTimeoutMs: 2_000,
      followerWaitMs: 3_000,
      publishWaitMs: 30_000,
      onStatus: extra.onStatus,
    }),
  });
}

/** Reports of `node`'s replica of `blob` so far, counting the one this call adds (reporter "test"). */
async function reportsWith(cp: string, blob: string, node: string): Promise<number> {
  const answer = await send(cp, 'POST', '/v1/reports', { digest: blob, node, reporter: 'test' });
  return ((await answer.json()) as { reports: number }).reports;
}

/**
 * Starts a fetch by `id` that follows `holder`; resolves once it is a follower (its status
 * says so), with the fetch's promise.
 */
async function following(
  cp: string,
  id: string,
  url: string,
): Promise<{ run: ReturnType<typeof fetchAs>; statuses: string[] }> {
  const statuses: string[] = [];
  let planned!: () => void;
  const follows = new Promise<void>((resolve) => (planned = resolve));
  const run = fetchAs(cp, id, url, {
    onStatus: (m) => {
      statuses.push(m);
      if (m.startsWith('another node is fetching it')) planned();
    },
  });
  run.catch(() => undefined);
  await Promise.race([follows, run]);
  return { run, statuses };
}

describe('the end of a follower fetch', () => {
  it(
    'asks for the leader manifest once and nothing after it when every piece is in it',
    { timeout: 90_000 },
    async () => {
      const url = newUrl();
      const cp = (await startTestControlPlane(closers)).url;
      await startTestAgent(closers, cp, 'follower-a', join(dir, 'follower-a'));
      const holder = await standInLeaseHolder({
        cp,
        url,
        content: content.bytes,
        pieceSize: PIECE,
        closers,
        node: 'leader-a',
        announced: [0, 1, 2],
      });
      const front = await controlPlaneFront(cp, closers);
      const { run } = await following(front.url, 'follower-a', url);
      // The leader done: its manifest (the true pieces) and the URL mapped to its digest.
      await holder.publish(content.sha256);
      const result = await run;
      holder.stopRenewing();

      assert.equal(await sha256OfFile(join(dir, 'follower-a.bin')), content.sha256);
      assert.equal(result.sha256, content.sha256);
      // Its pieces were hashed once, the whole file not: the leader's manifest vouched for them.
      assert.equal(result.stats.hashedBytes, SIZE);
      const manifestAsks = front.log.filter((line) => line === `GET /v1/blobs/${content.sha256}`);
      assert.equal(manifestAsks.length, 1, front.log.join('\n'));
      const after = front.log.slice(front.log.indexOf(`GET /v1/blobs/${content.sha256}`) + 1);
      const asksAgain = after.filter(
        (line) => line.startsWith('GET /v1/sources?') || line === `GET /v1/blobs/${content.sha256}`,
      );
      assert.deepEqual(asksAgain, [], front.log.join('\n'));
    },
  );

  it(
    'reports the peer that sent bytes which fail the whole-file check, and names it',
    { timeout: 90_000 },
    async () => {
      const url = newUrl();
      const cp = (await startTestControlPlane(closers)).url;
      await startTestAgent(closers, cp, 'follower-b', join(dir, 'follower-b'));
      // A lying lease holder: it publishes the digests of bytes of its own (piece 1 differs)
      // and serves them...
      const bad = Buffer.from(content.bytes);
      bad[PIECE + 777] ^= 0xff;
      const liar = await standInLeaseHolder({
        cp,
        url,
        content: bad,
        pieceSize: PIECE,
        closers,
        node: 'liar-b',
        announced: [0, 1, 2],
      });
      const { run } = await following(cp, 'follower-b', url);
      // ...and maps the URL to the true digest, with its true manifest.
      const truePieces = [0, 1, 2].map((i) =>
        sha256Of(content.bytes.subarray(i * PIECE, Math.min((i + 1) * PIECE, SIZE))),
      );
      await liar.publish(content.sha256, truePieces);
      await assert.rejects(run, (err: unknown) => {
        assert.ok(err instanceof LoomError, String(err));
        assert.equal(err.code, 'LOOM_ERR_DIGEST_MISMATCH');
        assert.match(
          err.message,
          /the fleet's record says [0-9a-f]{64}: peer liar-b sent every byte that came from peers/,
        );
        return true;
      });
      liar.stopRenewing();
      // The follower reported it under the name it served the blob by: a second reporter makes two.
      assert.equal(await reportsWith(cp, liar.blobId, 'liar-b'), 2);
    },
  );
});

describe('a --no-origin fetch whose only holder lies', () => {
  it('fails naming the URL asked for and the holder, and reports the holder', { timeout: 90_000 }, async () => {
    const url = newUrl();
    const cp = (await startTestControlPlane(closers)).url;
    // The fleet knows the URL's digest (no manifest: the blob was fetched without the fleet),
    // and one complete holder, whose "agent" serves other bytes under it.
    await send(cp, 'PUT', '/v1/sources', { key: sourceKey(url), digest: content.sha256 });
    const bad = Buffer.from(content.bytes);
    bad[3] ^= 0xff;
    const holder = await new OriginServer().listen();
    closers.push(() => holder.close());
    holder.setFile(`/v1/blobs/${content.sha256}`, bad);
    await send(cp, 'PUT', '/v1/nodes/liar-c', { url: holder.origin, freeUploadSlots: 4 });
    await send(cp, 'PUT', `/v1/blobs/${content.sha256}/replicas/liar-c`, { complete: true });
    origin.resetStats();

    await assert.rejects(fetchAs(cp, 'node-c', url, { useOrigin: false }), (err: unknown) => {
      assert.ok(err instanceof LoomError, String(err));
      assert.equal(err.code, 'LOOM_ERR_DIGEST_MISMATCH');
      assert.ok(err.message.startsWith(`sha256 mismatch for ${url}: `), err.message);
      assert.ok(!err.message.includes(holder.origin), err.message);
      assert.match(err.message, /peer liar-c sent every byte that came from peers \(\d+\): it served bytes that miss/);
      assert.equal(err.url, url);
      return true;
    });
    assert.equal(origin.bytesServed, 0, '--no-origin');
    assert.equal(await reportsWith(cp, content.sha256, 'liar-c'), 2);
  });
});
