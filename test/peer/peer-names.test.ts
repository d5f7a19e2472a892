// Peer slot names: a peer's slot in the download is named by its node id, and the origin's
// slot is named 'origin'. A node whose id is 'origin' (a host called so: the default node id
// is the host name) must still be an ordinary peer: before, the second node's download was
// refused outright ('source id "origin" given twice') whenever that node held the blob.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { randomContent, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import { startTestAgent, startTestControlPlane } from './peer-fixtures.js';

const SIZE = 3 * 1024 * 1024 + 777;
const content = randomContent(SIZE);
const closers: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});
const dir = tempDir('loom-peer-names-');

function fetchAs(cp: string, id: string, url: string) {
  return fetchCached(url, join(dir, `${id}.bin`), {
    cacheDir: join(dir, id),
    planner: new PeerPlanner({ controlPlane: cp, nodeId: id, followerWaitMs: 3_000, publishWaitMs: 10_000 }),
    retryBaseDelay: 5,
    retryMaxDelay: 50,
  });
}

describe('a peer whose node id is "origin"', () => {
  it('serves the next node like any peer, and the origin sends nothing more', async () => {
    const origin = await new OriginServer().listen();
    closers.push(() => origin.close());
    origin.setFile('/models/m.bin', content.bytes);
    const url = origin.url('/models/m.bin');
    const cp = (await startTestControlPlane(closers)).url;
    await startTestAgent(closers, cp, 'origin', join(dir, 'origin'));
    await startTestAgent(closers, cp, 'second', join(dir, 'second'));

    await fetchAs(cp, 'origin', url);
    await waitFor('the node named origin announced as complete', async () => {
      const res = await fetch(`${cp}/v1/blobs/${content.sha256}/peers`);
      const peers = ((await res.json()) as { peers?: Array<{ id: string; complete: boolean }> }).peers ?? [];
      return peers.some((p) => p.id === 'origin' && p.complete);
    });
    origin.resetStats();

    const second = await fetchAs(cp, 'second', url);
    assert.equal(await sha256OfFile(join(dir, 'second.bin')), content.sha256);
    assert.equal(second.sha256, content.sha256);
    assert.equal(origin.bytesServed, 0, 'every byte came from the peer');
    const bySource = (second as unknown as { bytesBySource: Record<string, number> }).bytesBySource;
    assert.equal(bySource['origin'] ?? 0, 0, JSON.stringify(bySource));
    assert.equal(
      Object.values(bySource).reduce((a, b) => a + b, 0),
      SIZE,
      JSON.stringify(bySource),
    );
  });
});
