// A follower hashes each byte once: it digests its pieces (each checked against the digest
// the lease holder published, or taken from the origin alone) and, at the end, finds all of
// them in the manifest the leader published for the digest it published, so the blob is that
// digest without a whole-file sha256 on top (which doubled a follower's hashing CPU). The
// leader still hashes twice (its whole-file digest and its piece digests: the manifest). A
// real control plane, real agents, an origin slow enough that the follower follows; both
// the hasher on the main thread (under 64 MiB) and the one on a worker thread. A follower
// pinned to a digest (--sha256) still hashes the whole file: the pin is checked end to end.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';
import { closersRunAfterAll, startTestAgent, startTestControlPlane, waitForFirstPiece } from './peer-fixtures.js';

const MiB = 1024 * 1024;
const closers = closersRunAfterAll();
const dir = tempDir('loom-follower-hash-');

function fetchAs(cp: string, id: string, url: string, pin?: string) {
  return fetchCached(url, join(dir, `${id}.bin`), {
    cacheDir: join(dir, id),
    sha256: pin,
    planner: new PeerPlanner({ controlPlane: cp, nodeId: id, followerWaitMs: 5_000, publishWaitMs: 30_000 }),
  });
}

describe('a follower without a manifest', () => {
  for (const [label, size, pinned] of [
    ['main-thread hasher, 3 pieces', 40 * MiB + 12345, false],
    ['worker-thread hasher, 5 pieces', 64 * MiB + 54321, false],
    ['pinned with --sha256: the whole file hashed too', 40 * MiB + 4321, true],
  ] as const) {
    it(
      `hashes its bytes ${pinned ? 'twice' : 'once'} and ends with the leader's digest (${label})`,
      { timeout: 120_000 },
      async () => {
        const content = randomContent(size);
        // 16 connections at 2 MiB/s: the leader needs a few seconds, so the follower follows.
        const origin = await new OriginServer({ rateLimitBytesPerSecond: 2 * MiB }).listen();
        closers.push(() => origin.close());
        origin.setFile('/models/m.bin', content.bytes);
        const url = origin.url('/models/m.bin');
        const cp = (await startTestControlPlane(closers)).url;
        const leaderId = `leader-${size}`;
        const followerId = `follower-${size}`;
        await startTestAgent(closers, cp, leaderId, join(dir, leaderId));
        await startTestAgent(closers, cp, followerId, join(dir, followerId));

        const pin = pinned ? content.sha256 : undefined;
        const leader = fetchAs(cp, leaderId, url, pin);
        leader.catch(() => undefined);
        // Pinned, the blob is named by its digest among peers from the start.
        await waitForFirstPiece(cp, pin ?? sourceBlobId(sourceKey(url)), leaderId, 60_000);
        const follower = await fetchAs(cp, followerId, url, pin);
        const fromLeader = await leader;

        assert.equal(await sha256OfFile(join(dir, `${followerId}.bin`)), content.sha256);
        assert.equal(await sha256OfFile(join(dir, `${leaderId}.bin`)), content.sha256);
        assert.equal(follower.sha256, content.sha256);
        const took = (follower as unknown as { bytesBySource: Record<string, number> }).bytesBySource;
        assert.ok((took[leaderId] ?? 0) > 0, `the follower took pieces from the leader: ${JSON.stringify(took)}`);
        // Once per byte on the follower (its piece digests), twice on the leader (whole file + pieces).
        assert.equal(follower.stats.hashedBytes, pinned ? 2 * size : size);
        assert.equal(fromLeader.stats.hashedBytes, 2 * size);
        // The origin sent one copy to the leader and at most the follower's first request (1 MiB).
        assert.ok(origin.bytesServed <= size + MiB, `the origin sent ${origin.bytesServed} bytes`);
      },
    );
  }
});
