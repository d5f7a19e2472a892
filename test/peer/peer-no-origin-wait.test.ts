// A --no-origin follower holding a peer's piece whose digest the lease holder never published
// (a liar announced a piece ahead of the holder) when the lease holder dies: nobody will
// publish that digest and this node may not take the lease over, so the fetch fails clearly
// and keeps nothing. Before, the piece waited for its digest for as long as the control
// plane answered: the fetch hung.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { LoomError } from '../../src/core/errors.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { randomContent, sha256Of, tempDir } from '../helpers/fixtures.js';
import { startTestAgent, startTestControlPlane } from './peer-fixtures.js';

const MiB = 1024 * 1024;
const PIECE = 16 * MiB;
const SIZE = PIECE + 4321;
const content = randomContent(SIZE);
const closers: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});
const dir = tempDir('loom-no-origin-wait-');

async function send(cp: string, method: string, path: string, body: unknown): Promise<Response> {
  const res = await fetch(`${cp}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status}`);
  return res;
}

describe('a --no-origin follower waiting for a digest whose lease holder died', () => {
  it('fails clearly instead of waiting forever, and keeps nothing', { timeout: 60_000 }, async () => {
    const origin = await new OriginServer().listen();
    closers.push(() => origin.close());
    origin.setFile('/models/m.bin', content.bytes);
    const url = origin.url('/models/m.bin');
    const blobId = sourceBlobId(sourceKey(url));
    const cp = (await startTestControlPlane(closers)).url;
    await startTestAgent(closers, cp, 'follower', join(dir, 'follower'));

    // The lease holder (a stand-in): the lease, piece 0's digest and piece 0 served.
    const lease = (await (await send(cp, 'POST', `/v1/blobs/${blobId}/leases`, { node: 'holder' })).json()) as {
      token: string;
    };
    const renew = setInterval(
      () => void fetch(`${cp}/v1/blobs/${blobId}/leases/${lease.token}`, { method: 'PUT' }),
      300,
    );
    closers.push(() => clearInterval(renew));
    const piece0 = sha256Of(content.bytes.subarray(0, PIECE));
    await send(cp, 'PUT', `/v1/sources/${blobId}/pieces`, {
      lease: lease.token,
      size: SIZE,
      pieceSize: PIECE,
      pieces: [piece0],
    });
    const holder = await new OriginServer().listen();
    closers.push(() => holder.close());
    holder.setFile(`/v1/blobs/${blobId}`, content.bytes);
    // Another peer announces piece 1 too, ahead of any published digest for it.
    const ahead = await new OriginServer().listen();
    closers.push(() => ahead.close());
    ahead.setFile(`/v1/blobs/${blobId}`, content.bytes);
    await send(cp, 'PUT', '/v1/nodes/holder', { url: holder.origin, freeUploadSlots: 4 });
    await send(cp, 'PUT', `/v1/blobs/${blobId}/replicas/holder`, { complete: false, pieces: [0] });
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
          if (m.startsWith('another node is fetching it')) clearInterval(renew);
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
