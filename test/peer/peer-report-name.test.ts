// A follower reports a peer that sent a bad piece under the name that peer holds the blob by:
// a follower takes pieces from complete holders of the digest the leader published (once it
// is), and a liar among them must be reported under that digest, where its replica is, so
// enough reports quarantine it for the nodes that fetch by digest. Before, it was reported
// under the source id, where it holds nothing: the reports counted against no replica.
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
const dir = tempDir('loom-report-name-');

describe('a follower served a bad piece by a complete holder of the published digest', () => {
  it('reports it under that digest, and ends with the exact bytes', { timeout: 90_000 }, async () => {
    // The lease holder (a stand-in): every piece's digest published, piece 0 announced.
    const { url, cp, holder } = await startFollowerScene({
      closers,
      dir,
      content: content.bytes,
      pieceSize: PIECE,
      announced: [0],
    });
    const { blobId } = holder;
    const bad = Buffer.from(content.bytes);
    bad[PIECE + 99] ^= 0xff;
    const liar = await new OriginServer().listen();
    closers.push(() => liar.close());
    liar.setFile(`/v1/blobs/${content.sha256}`, bad);

    // Once followed: the blob is published (manifest and source mapping), and the liar claims
    // it whole under its digest. Once the liar is dropped, the holder announces the rest.
    const published = async (): Promise<void> => {
      await holder.publish(content.sha256);
      await send(cp, 'PUT', '/v1/nodes/liar', { url: liar.origin, freeUploadSlots: 4 });
      await send(cp, 'PUT', `/v1/blobs/${content.sha256}/replicas/liar`, { complete: true });
    };
    const statuses: string[] = [];
    const result = await fetchCached(url, join(dir, 'follower.bin'), {
      cacheDir: join(dir, 'follower'),
      planner: new PeerPlanner({
        controlPlane: cp,
        nodeId: 'follower',
        stallTimeoutMs: 2_000,
        followerWaitMs: 5_000,
        publishWaitMs: 20_000,
        onStatus: (m) => {
          statuses.push(m);
          if (m.startsWith('another node is fetching it')) void published();
          if (/^peer liar\/\w+ dropped/.test(m))
            void send(cp, 'PUT', `/v1/blobs/${blobId}/replicas/holder`, { complete: false, pieces: [0, 1, 2] });
        },
      }),
      retryBaseDelay: 5,
      retryMaxDelay: 50,
    });
    holder.stopRenewing();
    assert.equal(result.sha256, content.sha256, statuses.join('\n'));
    assert.equal(await sha256OfFile(join(dir, 'follower.bin')), content.sha256);
    assert.ok(
      statuses.some((s) => /^peer liar\/\w+ dropped: piece 1 /.test(s)),
      statuses.join('\n'),
    );
    // A second reporter under the digest makes two: the follower's report counted there.
    const report = await send(cp, 'POST', '/v1/reports', { digest: content.sha256, node: 'liar', reporter: 'test' });
    assert.equal(((await report.json()) as { reports: number }).reports, 2);
  });
});
