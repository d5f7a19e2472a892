// A cold start with a liar among the peers: the leader (the lease holder) fetches the blob
// from a slow origin, and while it does, a fake agent announced through the real control
// plane as a partial holder serves a follower a bad piece. The follower has no manifest; it
// checks each piece a peer sent against the digest the leader publishes for it as it hashes
// it, so the liar is dropped and reported mid-download, the piece is taken again from the
// leader, and the follower's fetch succeeds with the exact bytes (before, the whole file was
// checked at the end only, and the follower's fetch failed with a digest mismatch). And a
// leader whose final manifest disagrees with the piece digests it published (a lying node
// under a stale lease) fails the follower's fetch clearly, with nothing kept.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { LoomError } from '../../src/core/errors.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { randomContent, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import {
  closersRunAfterAll,
  controlPlaneRequest as send,
  standInLeaseHolder,
  startTestAgent,
  startTestControlPlane,
  waitForFirstPiece,
} from './peer-fixtures.js';

const MiB = 1024 * 1024;
const PIECE = 16 * MiB;
// Five pieces, past the 64 MiB from which the engine hashes on a worker thread (the fleet's case).
const SIZE = 4 * PIECE + 54321;
const content = randomContent(SIZE);
const closers = closersRunAfterAll();
const dir = tempDir('loom-follower-liar-');

function fetchAs(cp: string, id: string, url: string, onStatus?: (m: string) => void) {
  return fetchCached(url, join(dir, `${id}.bin`), {
    cacheDir: join(dir, id),
    planner: new PeerPlanner({
      controlPlane: cp,
      nodeId: id,
      stallTimeoutMs: 2_000,
      followerWaitMs: 5_000,
      publishWaitMs: 30_000,
      onStatus,
    }),
  });
}

describe('a follower served a bad piece by a peer while the leader is still fetching', () => {
  it(
    'drops and reports the peer, takes the piece again, and ends with the exact bytes',
    { timeout: 120_000 },
    async () => {
      // The leader's requests for piece 1 are held until the follower asks the liar for it: a
      // leader done first (or holding piece 1 when the follower plans) would serve the follower
      // everything, and the liar nothing, on a machine slow enough to delay the follower.
      let letLeaderHavePiece1!: () => void;
      const leaderMayHavePiece1 = new Promise<void>((resolve) => (letLeaderHavePiece1 = resolve));
      closers.push(letLeaderHavePiece1);
      const inPiece1 = (range: { start: number; end: number } | undefined): boolean =>
        range !== undefined && range.start < 2 * PIECE && range.end > PIECE;
      // 16 connections at 512 KiB/s: the leader needs about 8 s for the file.
      const origin = await new OriginServer({
        rateLimitBytesPerSecond: 512 * 1024,
        fault: (ctx) => (inPiece1(ctx.range) ? { kind: 'hold', until: leaderMayHavePiece1 } : undefined),
      }).listen();
      closers.push(() => origin.close());
      origin.setFile('/models/m.bin', content.bytes);
      const url = origin.url('/models/m.bin');
      const blobId = sourceBlobId(sourceKey(url));
      const cp = (await startTestControlPlane(closers)).url;
      await startTestAgent(closers, cp, 'leader', join(dir, 'leader'));
      await startTestAgent(closers, cp, 'follower', join(dir, 'follower'));

      const leader = fetchAs(cp, 'leader', url);
      leader.catch(() => undefined);
      await waitForFirstPiece(cp, blobId, 'leader', 60_000);

      // The liar: a fake agent holding every piece under the source id, piece 1 with a flipped byte.
      const bad = Buffer.from(content.bytes);
      bad[PIECE + 4321] ^= 0xff;
      let liarAskedForPiece1 = false;
      const liar = await new OriginServer({
        fault: (ctx) => {
          if (inPiece1(ctx.range)) liarAskedForPiece1 = true;
          return undefined;
        },
      }).listen();
      closers.push(() => liar.close());
      liar.setFile(`/v1/blobs/${blobId}`, bad);
      const announceLiar = async (): Promise<void> => {
        await send(cp, 'PUT', '/v1/nodes/liar', { url: liar.origin, freeUploadSlots: 4 });
        await send(cp, 'PUT', `/v1/blobs/${blobId}/replicas/liar`, { complete: false, pieces: [0, 1, 2, 3, 4] });
      };
      await announceLiar();
      // Kept fresh however long the loaded machine takes (partials and nodes lapse after 30 s).
      const keepFresh = setInterval(() => void announceLiar().catch(() => undefined), 5_000);
      closers.push(() => clearInterval(keepFresh));

      const statuses: string[] = [];
      const following = fetchAs(cp, 'follower', url, (m) => statuses.push(m));
      following.catch(() => undefined);
      try {
        await waitFor('the follower asking the liar for piece 1', () => liarAskedForPiece1, 60_000);
      } finally {
        letLeaderHavePiece1();
      }
      const follower = await following;
      const fromLeader = await leader;
      clearInterval(keepFresh);

      assert.equal(await sha256OfFile(join(dir, 'follower.bin')), content.sha256);
      assert.equal(await sha256OfFile(join(dir, 'leader.bin')), content.sha256);
      assert.equal(follower.sha256, content.sha256);
      assert.equal(fromLeader.sha256, content.sha256);
      const result = follower as unknown as {
        bytesBySource: Record<string, number>;
        droppedSources: Array<{ id: string; code: string; message: string }>;
      };
      assert.ok((result.bytesBySource.liar ?? 0) > 0, `the liar served the follower: ${JSON.stringify(result)}`);
      const dropped = result.droppedSources.find((d) => d.id === 'liar');
      assert.equal(dropped?.code, 'LOOM_ERR_DIGEST_MISMATCH', JSON.stringify(result.droppedSources));
      assert.match(dropped.message, /piece 1 /);
      assert.ok(
        statuses.some((s) => s.startsWith('peer liar dropped')),
        statuses.join('\n'),
      );
      // The follower reported it under the id the liar announced it by: a second reporter makes two.
      const report = await send(cp, 'POST', '/v1/reports', { digest: blobId, node: 'liar', reporter: 'test' });
      assert.equal(((await report.json()) as { reports: number }).reports, 2);
      // The origin sent one copy to the leader and at most the follower's first request (1 MiB).
      const leaderTook = (fromLeader as unknown as { bytesBySource: Record<string, number> }).bytesBySource;
      assert.equal(leaderTook.origin, SIZE, JSON.stringify(leaderTook));
      assert.ok((result.bytesBySource.origin ?? 0) <= MiB, JSON.stringify(result.bytesBySource));
      // And what the leader's held requests for piece 1 sent past where it split them (it
      // splits a request that has not answered yet, and the origin counts what it wrote
      // before the cut-short request was closed).
      assert.ok(origin.bytesServed <= SIZE + MiB + 4 * MiB, `the origin sent ${origin.bytesServed} bytes`);
    },
  );

  it(
    'fails clearly, keeping nothing, when the final manifest disagrees with the published piece digests',
    { timeout: 60_000 },
    async () => {
      const origin = await new OriginServer().listen();
      closers.push(() => origin.close());
      origin.setFile('/models/lying.bin', content.bytes);
      const url = origin.url('/models/lying.bin');
      const cp = (await startTestControlPlane(closers)).url;
      // A fake leader: it holds the lease, publishes the true piece digests and serves the true
      // bytes as a partial holder...
      const fake = await standInLeaseHolder({
        cp,
        url,
        content: content.bytes,
        pieceSize: PIECE,
        closers,
        node: 'fakeleader',
        announced: [0, 1, 2, 3, 4],
      });

      // ...and once the follower follows it, maps the source to the true digest with a manifest
      // whose piece 2 is another one.
      let planned!: () => void;
      const following = new Promise<void>((resolve) => (planned = resolve));
      const run = fetchAs(cp, 'follower2', url, (m) => {
        if (m.startsWith('another node is fetching it')) planned();
      });
      run.catch(() => undefined);
      await following;
      const lie = [...fake.pieces.slice(0, 2), 'e'.repeat(64), ...fake.pieces.slice(3)];
      await fake.publish(content.sha256, lie);

      await assert.rejects(run, (err: unknown) => {
        assert.ok(err instanceof LoomError, String(err));
        assert.equal(err.code, 'LOOM_ERR_DIGEST_MISMATCH');
        assert.match(err.message, /disagrees with the piece digests its lease holder published: piece 2 /);
        return true;
      });
      fake.stopRenewing();
      assert.equal(existsSync(join(dir, 'follower2.bin')), false);
      const cache = join(dir, 'follower2');
      const kept = readdirSync(cache, { recursive: true, withFileTypes: true }).filter(
        (e) => e.isFile() && (e.name.endsWith('.part') || /^[0-9a-f]{64}$/.test(e.name)),
      );
      assert.deepEqual(
        kept.map((e) => e.name),
        [],
      );
    },
  );
});
