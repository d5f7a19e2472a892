// The node fetching a blob from the origin for the fleet (the lease holder) loses its agent
// (the built CLI's `loom agent`, killed with SIGKILL: its port refuses), or its agent sends
// bad bytes, while its fetch runs on and keeps the lease. A follower whose only peer is that
// agent must not wait on it: with the origin allowed it takes what no live peer holds from
// the origin and ends exact; under --no-origin it fails with LOOM_ERR_NO_SOURCE. Before, each
// waited for the engine's source wait (60 s) while the holder renewed its lease: the tests'
// 40 s timeouts end that wait (issue #9: no node waits on a dead peer for more than seconds).
// The holder's requests past its first piece are held by the origin until the follower has
// decided (then it finishes and publishes, as a slow leader would): run `npm run build` first.
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
import { randomContent, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import {
  startCliAgent,
  startFollowerScene,
  startTestAgent,
  startTestControlPlane,
  waitForFirstPiece,
  type Closers,
} from './peer-fixtures.js';

const MiB = 1024 * 1024;
const PIECE = 16 * MiB;
const SIZE = 2 * PIECE + 777; // three pieces
const content = randomContent(SIZE);
const closers: Closers = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});
const dir = tempDir('loom-holder-agent-gone-');

interface Scene {
  origin: OriginServer;
  url: string;
  cp: string;
  blobId: string;
  /** The lease holder's fetch; resolves to its output. */
  leader: Promise<string>;
  /** Kills the holder's agent (SIGKILL): its port refuses from then on. */
  killAgent(): Promise<void>;
  /** Lets the holder's requests for piece 1 go: it verifies and announces that piece. */
  releasePiece1(): void;
  /** Lets all its requests go: it finishes and publishes the blob's digest. */
  release(): void;
}

/**
 * A lease holder fetching `content` with its agent up, once it has announced its first
 * piece. Its requests past that piece are held by the origin until released (requests made
 * once its agent is killed are not: the follower's); it keeps its lease meanwhile, as a
 * leader on a slow origin does.
 */
async function holderWithPieceZero(name: string): Promise<Scene> {
  const gate = (): { open: () => void; opened: Promise<void> } => {
    let open!: () => void;
    const opened = new Promise<void>((resolve) => (open = resolve));
    return { open, opened };
  };
  const piece1 = gate();
  const rest = gate();
  const origin = await new OriginServer({
    fault: ({ range, headers }) =>
      headers['x-node'] === 'leader' && range && range.start >= PIECE
        ? { kind: 'hold', until: range.start < 2 * PIECE ? piece1.opened : rest.opened }
        : undefined,
  }).listen();
  closers.push(() => origin.close());
  origin.setFile('/models/m.bin', content.bytes);
  const url = origin.url('/models/m.bin');
  const cp = (await startTestControlPlane(closers)).url;
  const cacheDir = join(dir, `${name}-leader`);
  const { agent, ended: agentEnded } = await startCliAgent(closers, cp, 'leader', cacheDir);
  const out = join(dir, `${name}-leader.bin`);
  const leader = fetchCached(url, out, {
    cacheDir,
    // It renews its lease while its requests are held (bytes stop arriving).
    planner: new PeerPlanner({ controlPlane: cp, nodeId: 'leader', leaseIdleMs: 120_000 }),
    headers: { 'x-node': 'leader' },
  }).then(() => out);
  // Its end is awaited by the test, and before its cache goes (after a failed test too).
  closers.push(async () => {
    piece1.open();
    rest.open();
    await leader.catch(() => undefined);
  });
  const blobId = sourceBlobId(sourceKey(url));
  await waitForFirstPiece(cp, blobId, 'leader', 30_000);
  const killAgent = async (): Promise<void> => {
    agent.kill('SIGKILL');
    assert.equal((await agentEnded).signal, 'SIGKILL');
  };
  const release = (): void => {
    piece1.open();
    rest.open();
  };
  return { origin, url, cp, blobId, leader, killAgent, releasePiece1: piece1.open, release };
}

/** A fetch on node `name`, whose agent serves what it verifies (as a fleet node's does). */
async function follower(scene: Scene, name: string, useOrigin: boolean, statuses: string[]): Promise<string> {
  const out = join(dir, `${name}.bin`);
  await startTestAgent(closers, scene.cp, name, join(dir, name));
  return fetchCached(scene.url, out, {
    cacheDir: join(dir, name),
    planner: new PeerPlanner({
      controlPlane: scene.cp,
      nodeId: name,
      useOrigin,
      stallTimeoutMs: 2_000,
      followerWaitMs: 3_000,
      publishWaitMs: 30_000,
      onStatus: (m) => statuses.push(m),
    }),
    headers: { 'x-node': name },
    retryBaseDelay: 5,
    retryMaxDelay: 50,
  }).then(() => out);
}

/** Body bytes node `node` asked the origin for (the ranges of its requests). */
function askedOf(origin: OriginServer, node: string): number {
  let bytes = 0;
  for (const request of origin.requests.filter((r) => r.headers['x-node'] === node)) {
    const match = /^bytes=(\d+)-(\d+)$/.exec(request.range ?? '');
    bytes += match ? Number(match[2]) - Number(match[1]) + 1 : SIZE;
  }
  return bytes;
}

describe("a follower whose only peer, the lease holder's agent, is dropped while the holder keeps its lease", () => {
  it(
    'the agent killed: takes what no live peer holds from the origin, and ends exact',
    { timeout: 40_000 },
    async () => {
      const scene = await holderWithPieceZero('with-origin');
      await scene.killAgent();
      const statuses: string[] = [];
      const run = follower(scene, 'follower', true, statuses);
      // Once it stopped waiting on the holder (or failed), the holder finishes and publishes.
      await waitFor('the follower deciding', () => statuses.some((s) => s.includes('cannot serve it here')), 30_000)
        .catch(() => undefined)
        .finally(() => scene.release());
      const out = await run;
      assert.equal(await sha256OfFile(out), content.sha256);
      assert.ok(
        statuses.some((s) => s.startsWith('another node is fetching it')),
        `it followed the holder: ${statuses.join(' | ')}`,
      );
      assert.ok(
        statuses.some((s) => /^peer leader dropped: .*refused the connection/.test(s)),
        `the dead agent was dropped: ${statuses.join(' | ')}`,
      );
      assert.ok(
        statuses.some((s) =>
          s.includes('(leader) cannot serve it here: what no live peer holds comes from the origin'),
        ),
        `it stopped waiting on the holder: ${statuses.join(' | ')}`,
      );
      assert.equal(await sha256OfFile(await scene.leader), content.sha256);
      // None of it could come from the dead agent: the follower took one copy from the origin.
      const asked = askedOf(scene.origin, 'follower');
      assert.ok(asked >= SIZE && asked <= SIZE + MiB, `the follower asked the origin for ${asked} bytes`);
    },
  );

  it(
    'the agent killed mid-download, under --no-origin: fails with LOOM_ERR_NO_SOURCE, keeping nothing',
    { timeout: 40_000 },
    async () => {
      const scene = await holderWithPieceZero('no-origin');
      const statuses: string[] = [];
      const run = follower(scene, 'follower-no-origin', false, statuses);
      run.catch(() => undefined);
      // It takes piece 0 from the holder's agent; then the agent dies, and the holder fetches
      // piece 1 and announces it (still holding the lease: piece 2 is held).
      await waitForFirstPiece(scene.cp, scene.blobId, 'follower-no-origin', 30_000);
      await scene.killAgent();
      scene.releasePiece1();
      await assert.rejects(run, (err: unknown) => {
        assert.ok(err instanceof LoomError, String(err));
        assert.equal(err.code, 'LOOM_ERR_NO_SOURCE', `${err.message}\n${statuses.join('\n')}`);
        assert.match(err.message, /dropped: leader/);
        return true;
      });
      scene.release();
      assert.ok(
        statuses.some((s) => s.includes('(leader) cannot serve it here, and --no-origin')),
        `it stopped waiting on the holder: ${statuses.join(' | ')}`,
      );
      assert.equal(existsSync(join(dir, 'follower-no-origin.bin')), false, 'no output');
      assert.equal(askedOf(scene.origin, 'follower-no-origin'), 0, '--no-origin');
      // The leader ends exact.
      assert.equal(await sha256OfFile(await scene.leader), content.sha256);
    },
  );

  it(
    'the agent sending bad bytes: takes what no live peer holds from the origin, and ends exact',
    { timeout: 40_000 },
    async () => {
      // A stand-in lease holder (peer-fixtures.ts) that renews its lease and has published every
      // piece's digest, but whose server sends other bytes than the blob's for piece 0.
      const scene = await startFollowerScene({
        closers,
        dir: join(dir, 'liar'),
        content: content.bytes,
        pieceSize: PIECE,
        announced: [0],
      });
      const lie = Buffer.from(content.bytes);
      // Past the first MiB, which the follower's first request takes from the origin.
      lie[2 * MiB + 5] ^= 0xff;
      scene.holder.server.setFile(`/v1/blobs/${scene.holder.blobId}`, lie);
      const statuses: string[] = [];
      const out = join(dir, 'liar.bin');
      await fetchCached(scene.url, out, {
        cacheDir: join(dir, 'liar', 'follower'),
        planner: new PeerPlanner({
          controlPlane: scene.cp,
          nodeId: 'follower',
          stallTimeoutMs: 2_000,
          followerWaitMs: 3_000,
          publishWaitMs: 30_000,
          onStatus: (m) => {
            statuses.push(m);
            // Decided: the holder finishes, and publishes the digest the follower checks against.
            if (m.includes('cannot serve it here')) void scene.holder.publish(content.sha256);
          },
        }),
        retryBaseDelay: 5,
        retryMaxDelay: 50,
      });
      assert.equal(await sha256OfFile(out), content.sha256);
      assert.ok(
        statuses.some((s) =>
          /^peer holder dropped: .*LOOM_ERR_DIGEST_MISMATCH|^peer holder dropped: .*(sha256|digest)/i.test(s),
        ),
        `the liar was dropped for its bytes: ${statuses.join(' | ')}`,
      );
      assert.ok(
        statuses.some((s) =>
          s.includes('(holder) cannot serve it here: what no live peer holds comes from the origin'),
        ),
        `it stopped waiting on the holder: ${statuses.join(' | ')}`,
      );
      // Piece 0 came from the liar, was refused, and came from the origin: one copy in all.
      assert.ok(
        scene.origin.bytesServed >= SIZE && scene.origin.bytesServed <= SIZE + MiB,
        `the origin sent ${scene.origin.bytesServed} bytes`,
      );
    },
  );
});
