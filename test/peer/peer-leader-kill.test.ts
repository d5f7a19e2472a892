// The node fetching a blob from the origin for the fleet (the leaseholder) dies: the built
// CLI (`bin/loom.cjs fetch --control-plane --node-id`, run `npm run build` first) is the
// leader, on a rate-limited origin so it is still downloading when it is killed with
// SIGKILL. Its agent stays up (a crashed fetch, not a crashed node) and so do the others,
// which must finish with the exact bytes once the lease lapses, one of them taking over the
// origin fetch. The followers run with the default retry policy, as `loom fetch` does.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { Agent } from '../../src/peer/agent.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { collect, randomContent, sha256OfFile, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { startCliAgent, startTestAgent, startTestControlPlane, waitForFirstPiece } from './peer-fixtures.js';

const SIZE = 40 * 1024 * 1024 + 777; // three pieces
const content = randomContent(SIZE);
const closers: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});
const dir = tempDir('loom-leader-kill-');

async function controlPlane(): Promise<string> {
  return (await startTestControlPlane(closers)).url;
}

function agentFor(cp: string, id: string, cacheDir: string): Promise<Agent> {
  return startTestAgent(closers, cp, id, cacheDir);
}

async function leaderKilled(wholeNode: boolean): Promise<void> {
  // 16 connections at 256 KiB/s: the leader needs about 10 s for the file.
  const origin = await new OriginServer({ rateLimitBytesPerSecond: 256 * 1024 }).listen();
  closers.push(() => origin.close());
  origin.setFile('/models/m.bin', content.bytes);
  const url = origin.url('/models/m.bin');
  const cp = await controlPlane();

  // The followers' agents first: they must be up before the leader is done.
  const followerIds = [`f1-${wholeNode}`, `f2-${wholeNode}`];
  const followerAgents = Promise.all(followerIds.map((id) => agentFor(cp, id, join(dir, id))));
  await followerAgents;
  const leaderCache = join(dir, `leader-${wholeNode}`);
  const killed: Array<ReturnType<typeof startLoom>> = [];
  if (wholeNode) {
    // The leader's agent is its own process too, killed with the fetch (the node died).
    const { agent } = await startCliAgent(closers, cp, 'leader', leaderCache);
    killed.push(agent);
  } else {
    await agentFor(cp, 'leader', leaderCache);
  }
  const leader = startLoom([
    'fetch',
    url,
    '-o',
    join(dir, `leader-${wholeNode}.bin`),
    '--cache-dir',
    leaderCache,
    '--control-plane',
    cp,
    '--node-id',
    'leader',
    '--progress',
    'none',
  ]);
  const leaderDone = collect(leader);
  closers.push(() => leader.kill('SIGKILL'));
  killed.push(leader);
  // The others join once the leader has announced its first verified piece: they follow it.
  const blobId = sourceBlobId(sourceKey(url));
  await waitForFirstPiece(cp, blobId, 'leader', 30_000);

  const statuses: string[] = [];
  const followers = followerIds.map((id) => {
    const cacheDir = join(dir, id);
    const out = join(dir, `${id}.bin`);
    const run = followerAgents.then(() =>
      fetchCached(url, out, {
        cacheDir,
        planner: new PeerPlanner({
          controlPlane: cp,
          nodeId: id,
          stallTimeoutMs: 2_000,
          followerWaitMs: 5_000,
          publishWaitMs: 20_000,
          onStatus: (m) => statuses.push(`${id}: ${m}`),
        }),
      }),
    );
    return run.then(() => out);
  });
  // Killed past its first piece and before it is done: the others may plan before or after
  // the kill; either way the dead leader is still listed as a partial holder.
  await waitFor('the leader past half the file', () => origin.bytesServed > 20 * 1024 * 1024, 30_000);
  for (const child of killed) child.kill('SIGKILL');
  const ended = await leaderDone;
  assert.equal(ended.signal, 'SIGKILL', `the leader was still running: ${ended.stderr}`);

  for (const out of await Promise.all(followers)) assert.equal(await sha256OfFile(out), content.sha256);
  // One follower, not both, fetches what nobody holds from the origin.
  assert.equal(statuses.filter((s) => s.endsWith('this node takes over')).length, 1, statuses.join('\n'));
  if (wholeNode) {
    // A dead node's port refuses: it is passed over at the first refusal, not after a
    // retry budget of backoffs (1 s doubling: half a minute on a dead peer).
    const dropped = statuses.filter((s) => s.includes('peer leader dropped'));
    for (const status of dropped) assert.match(status, /refused the connection/);
  }
}

describe('the leaseholder killed mid-download', () => {
  it(
    'its fetch killed (its agent up): the others finish with the exact bytes after its lease lapses',
    { timeout: 120_000 },
    () => leaderKilled(false),
  );

  it(
    'the whole node killed (fetch and agent): the others finish with the exact bytes after its lease lapses',
    { timeout: 120_000 },
    () => leaderKilled(true),
  );
});
