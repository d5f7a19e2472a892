// A --no-origin follower holding a peer's piece whose digest the lease holder never published
// (a liar announced a piece ahead of the holder) when the lease holder dies: nobody will
// publish that digest and this node may not take the lease over, so the fetch fails clearly
// and keeps nothing. Before, the piece waited for its digest for as long as the control
// plane answered: the fetch hung.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { LoomError } from '../../src/core/errors.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { randomContent, tempDir } from '../helpers/fixtures.js';
import { closersRunAfterAll, controlPlaneRequest as send, startFollowerScene } from './peer-fixtures.js';

const MiB = 1024 * 1024;
const PIECE = 16 * MiB;
const SIZE = PIECE + 4321;
const content = randomContent(SIZE);
const closers = closersRunAfterAll();
const dir = tempDir('loom-no-origin-wait-');

describe('a --no-origin follower waiting for a digest whose lease holder died', () => {
  it('fails clearly instead of waiting forever, and keeps nothing', { timeout: 60_000 }, async () => {
    // The lease holder (a stand-in): the lease, piece 0's digest and piece 0 announced.
    const { origin, url, cp, holder } = await startFollowerScene({
      closers,
      dir,
      content: content.bytes,
      pieceSize: PIECE,
      publishedPieces: 1,
      announced: [0],
    });
    const { blobId } = holder;
    // Another peer announces piece 1 too, ahead of any published digest for it.
    const ahead = await new OriginServer().listen();
    closers.push(() => ahead.close());
    ahead.setFile(`/v1/blobs/${blobId}`, content.bytes);
    await send(cp, 'PUT', '/v1/nodes/ahead', { url: ahead.origin, freeUploadSlots: 4 });
    await send(cp, 'PUT', `/v1/blobs/${blobId}/replicas/ahead`, { complete: false, pieces: [0, 1] });

    const statuses: string[] = [];
    const run = fetchCached(url, join(dir, 'follower.bin'), {
      cacheDir: join(dir, 'follower'),
      planner: new PeerPlanner({
        controlPlane: cp,
        nodeId: 'follower',
        useOrigin: false,
        stallTimeoutMs: 2_000,
        followerWaitMs: 3_000,
        publishWaitMs: 10_000,
        onStatus: (m) => {
          statuses.push(m);
          // The holder dies once it is followed: its lease lapses (2 s) unrenewed.
          if (m.startsWith('another node is fetching it')) holder.stopRenewing();
        },
      }),
      retryBaseDelay: 5,
      retryMaxDelay: 50,
    });
    await assert.rejects(run, (err: unknown) => {
      assert.ok(err instanceof LoomError, String(err));
      assert.equal(err.code, 'LOOM_ERR_NO_SOURCE', `${err.message}\n${statuses.join('\n')}`);
      return true;
    });
    assert.ok(ahead.requests.length > 0, 'piece 1 was taken from the peer ahead of the holder');
    assert.equal(origin.bytesServed, 0, '--no-origin');
    assert.equal(existsSync(join(dir, 'follower.bin')), false);
  });
});
