// A node whose only peer is dropped (it answered 404 for pieces the control plane lists it
// with: an agent whose node restarted, or a download that moved on) must not be left with
// no source while the origin is reachable: once nobody holds the blob's lease (nobody
// fetches it from the origin for the fleet), it takes what no live peer holds from the
// origin. The demo's step 5 (three fresh nodes at once on a loaded machine) failed so:
// "no source can serve bytes 0-… ; dropped: node-c (LOOM_ERR_HTTP_STATUS)".
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { ControlPlaneClient } from '../../src/control-plane/client.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { ClientSwarmControl } from '../../src/peer/swarm-control.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';
import { startTestAgent, startTestControlPlane, type Closers, peerFetcher } from './peer-fixtures.js';

const SIZE = 20 * 1024 * 1024 + 321; // two pieces
const content = randomContent(SIZE);
const closers: Closers = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});
const dir = tempDir('loom-peer-dropped-holder-');

const fetchOn = peerFetcher(dir);

describe('a node whose only peer is dropped', { timeout: 120_000 }, () => {
  it('goes to the origin once nobody holds the lease, and ends exact', async () => {
    const origin = await new OriginServer().listen();
    closers.push(() => origin.close());
    origin.setFile('/models/m.bin', content.bytes);
    const url = origin.url('/models/m.bin');
    const cp = await startTestControlPlane(closers);

    // A first node fetches it: the source's digest and manifest are published. Its agent then
    // stops (the control plane forgets its replicas), as in the demo before step 5.
    const seed = await startTestAgent(closers, cp.url, 'seed', join(dir, 'seed'));
    assert.equal(await sha256OfFile(await fetchOn('seed', join(dir, 'seed'), url, cp.url)), content.sha256);
    await seed.stop(0);
    const control = new ClientSwarmControl(new ControlPlaneClient({ baseUrl: cp.url }));
    const digest = await control.sourceDigest(sourceKey(url));
    assert.equal(digest, content.sha256);

    // A registered node listed with piece 0 that its agent does not have: it answers 404.
    await startTestAgent(closers, cp.url, 'ghost', join(dir, 'ghost'));
    const ghost = new ControlPlaneClient({ baseUrl: cp.url, nodeId: 'ghost' });
    const listed = await ghost.announce(digest!, 'ghost', { complete: false, pieces: [0] });
    assert.ok(listed.ok, `announce: ${listed.status}`);
    let keepListed = true;
    const relist = (async () => {
      while (keepListed) {
        await ghost.announce(digest!, 'ghost', { complete: false, pieces: [0] }).catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();

    origin.resetStats();
    const statuses: string[] = [];
    const out = join(dir, 'fresh.bin');
    try {
      await fetchCached(url, out, {
        cacheDir: join(dir, 'fresh'),
        planner: new PeerPlanner({
          controlPlane: cp.url,
          nodeId: 'fresh',
          followerWaitMs: 3_000,
          publishWaitMs: 10_000,
          onStatus: (message) => statuses.push(message),
        }),
        retryBaseDelay: 5,
        retryMaxDelay: 50,
      });
    } finally {
      keepListed = false;
      await relist;
    }
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(
      statuses.some((s) => s.startsWith('peer ghost dropped')),
      `the ghost was asked and dropped: ${statuses.join(' | ')}`,
    );
    // The ghost held nothing: the origin sent the file, once.
    assert.ok(
      origin.bytesServed >= SIZE && origin.bytesServed <= SIZE * 1.1,
      `the origin sent ${origin.bytesServed} bytes`,
    );
  });
});
