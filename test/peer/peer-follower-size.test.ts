// A follower without a manifest learns the blob's size before its first request: the lease
// holder publishes it with its piece digests. A --no-origin follower's first request goes to
// a peer; a liar ranked first (it claims the whole blob) that answers it with another total
// size must be passed over like any wrong Content-Range. Before, the follower took the liar's
// size, refused every honest peer's answer for disagreeing with it, and failed
// ('the node fetching this blob from the origin published pieces of N bytes...').
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';
import { closersRunAfterAll, controlPlaneRequest as send, startFollowerScene } from './peer-fixtures.js';

const MiB = 1024 * 1024;
const PIECE = 16 * MiB;
const SIZE = 2 * PIECE + 4321;
const content = randomContent(SIZE);
const closers = closersRunAfterAll();
const dir = tempDir('loom-follower-size-');

describe('a --no-origin follower whose first peer lies about the size', () => {
  it('passes the liar over and takes the exact bytes from the honest lease holder', { timeout: 60_000 }, async () => {
    // The lease holder (a stand-in agent): the lease, every piece's digest, every piece served.
    const { origin, url, cp, holder } = await startFollowerScene({
      closers,
      dir,
      content: content.bytes,
      pieceSize: PIECE,
      announced: [0, 1, 2],
    });
    const { blobId } = holder;
    // The liar: "complete" (ranked first), with the same bytes and one more MiB.
    const liar = await new OriginServer().listen();
    closers.push(() => liar.close());
    liar.setFile(`/v1/blobs/${blobId}`, Buffer.concat([content.bytes, Buffer.alloc(MiB, 7)]));
    await send(cp, 'PUT', '/v1/nodes/liar', { url: liar.origin, freeUploadSlots: 64 });
    await send(cp, 'PUT', `/v1/blobs/${blobId}/replicas/liar`, { complete: true });

    const statuses: string[] = [];
    const result = await fetchCached(url, join(dir, 'follower.bin'), {
      cacheDir: join(dir, 'follower'),
      planner: new PeerPlanner({
        controlPlane: cp,
        nodeId: 'follower',
        useOrigin: false,
        stallTimeoutMs: 2_000,
        followerWaitMs: 5_000,
        publishWaitMs: 10_000,
        onStatus: (m) => {
          statuses.push(m);
          // Following it: the holder finishes and publishes the blob (the follower's final check).
          if (m.startsWith('another node is fetching it')) void holder.publish(content.sha256);
        },
      }),
      retryBaseDelay: 5,
      retryMaxDelay: 50,
    });
    holder.stopRenewing();
    assert.equal(result.sha256, content.sha256, statuses.join('\n'));
    assert.equal(await sha256OfFile(join(dir, 'follower.bin')), content.sha256);
    assert.equal(origin.bytesServed, 0, 'no byte from the origin');
    assert.ok(liar.requests.length > 0, 'the liar was asked first');
    const bySource = (result as unknown as { bytesBySource: Record<string, number> }).bytesBySource;
    assert.equal(bySource.holder, SIZE, JSON.stringify(bySource));
  });
});
