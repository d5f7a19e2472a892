// Fetching with peers when things around the fetch go wrong: two fetches of one file on one
// node at once, and a control plane that goes away while a node downloads. Each must end
// with the exact bytes; the origin sends one copy.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { randomContent, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import { startTestAgent, startTestControlPlane, peerFetcher } from './peer-fixtures.js';

const SIZE = 20 * 1024 * 1024 + 321; // two pieces
const content = randomContent(SIZE);
const closers: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});
const dir = tempDir('loom-peer-races-');

function controlPlane(): Promise<{ url: string; close: () => Promise<void> }> {
  return startTestControlPlane(closers);
}

async function slowOrigin(bytesPerSecond = 512 * 1024): Promise<{ origin: OriginServer; url: string }> {
  // 16 connections at 512 KiB/s: a few seconds for the file.
  const origin = await new OriginServer({ rateLimitBytesPerSecond: bytesPerSecond }).listen();
  closers.push(() => origin.close());
  origin.setFile('/models/m.bin', content.bytes);
  return { origin, url: origin.url('/models/m.bin') };
}

const fetchOn = peerFetcher(dir);

describe('fetch with peers, races and outages', { timeout: 120_000 }, () => {
  it('two fetches of one file on one node at once both end exact, and the origin sends one copy', async () => {
    const { origin, url } = await slowOrigin();
    const cp = await controlPlane();
    const cacheDir = join(dir, 'same-node');
    const outsNow = await Promise.all([fetchOn('same', cacheDir, url, cp.url), fetchOn('same', cacheDir, url, cp.url)]);
    for (const out of outsNow) assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(origin.bytesServed <= SIZE * 1.1, `the origin sent ${origin.bytesServed} bytes`);
  });

  it('the control plane going down mid-download: the node fetching from the origin ends exact', async () => {
    const { origin, url } = await slowOrigin();
    const cp = await controlPlane();
    const run = fetchOn('lonely', join(dir, 'lonely'), url, cp.url);
    await waitFor('the download under way', () => origin.bytesServed > SIZE / 4, 30_000);
    await cp.close();
    assert.equal(await sha256OfFile(await run), content.sha256);
  });

  it('the control plane going down while a node follows the leader: both end exact', async () => {
    // About 8 s for the leader's first piece, 10 s for the file.
    const { url } = await slowOrigin(128 * 1024);
    const cp = await controlPlane();
    const leaderCache = join(dir, 'cp-leader');
    const followerCache = join(dir, 'cp-follower');
    for (const [id, cacheRoot] of [
      ['cp-leader', leaderCache],
      ['cp-follower', followerCache],
    ] as const) {
      await startTestAgent(closers, cp.url, id, cacheRoot);
    }
    const leader = fetchOn('cp-leader', leaderCache, url, cp.url);
    const blobId = sourceBlobId(sourceKey(url));
    await waitFor(
      'the leader announcing its first piece',
      async () => {
        const res = await fetch(`${cp.url}/v1/blobs/${blobId}/peers`);
        const peers = ((await res.json()) as { peers?: Array<{ id: string; pieces: number[] | null }> }).peers ?? [];
        return peers.some((p) => p.id === 'cp-leader' && (p.pieces?.length ?? 0) > 0);
      },
      30_000,
    );
    const follower = fetchOn('cp-follower', followerCache, url, cp.url);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await cp.close();
    assert.equal(await sha256OfFile(await leader), content.sha256);
    assert.equal(await sha256OfFile(await follower), content.sha256);
  });
});
