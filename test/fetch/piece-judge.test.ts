// The prefix hashers (main thread and worker thread) with a judge: each piece counts only
// once the judge accepts it; a piece the judge is still deciding holds the hasher at its end
// however far the prefix grows; a refused piece sends the whole-file hash back to the
// piece's start, so once its bytes are replaced on disk the digest is the good file's, with
// no trace of the refused bytes, and each piece is reported once, with its good digest. And
// the engine with pieceDigest (a follower's download): a peer's bad piece is refused, its
// peer dropped, the piece refetched, and only pieces with peer bytes are asked about.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { downloadBlob, type SourceSlot } from '../../src/fetch/download.js';
import { ThreadedPrefixHasher } from '../../src/fetch/hash-thread.js';
import { resolveFetchOptions } from '../../src/fetch/options.js';
import { PartFile } from '../../src/fetch/part-file.js';
import { PrefixHasher, type FinishedPrefixHasher, type PieceDigests } from '../../src/fetch/prefix-hasher.js';
import { sourceFor } from '../../src/sources/index.js';
import { randomContent, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';

const dir = tempDir('loom-piece-judge-');
const PIECE = 256 * 1024;
const SIZE = 4 * PIECE + 777; // five pieces, the last short
const content = randomContent(SIZE);
const sha = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const goodPieces = Array.from({ length: 5 }, (_, i) => sha(content.bytes.subarray(i * PIECE, (i + 1) * PIECE)));

type Make = (
  path: string,
  pieces: PieceDigests,
) => Promise<{ hasher: FinishedPrefixHasher; close: () => Promise<void> }>;

const kinds: Array<[string, Make]> = [
  [
    'PrefixHasher (main thread)',
    async (path, pieces) => {
      const part = await PartFile.open(path);
      return { hasher: new PrefixHasher(part, pieces, 100_000), close: () => part.close() };
    },
  ],
  [
    'ThreadedPrefixHasher',
    (path, pieces) => {
      const hasher = new ThreadedPrefixHasher(path, pieces, 100_000);
      return Promise.resolve({ hasher, close: () => Promise.resolve(hasher.close()) });
    },
  ],
];

for (const [name, make] of kinds) {
  describe(`${name} with a judge`, () => {
    it('goes back to the start of a refused piece, and digests only the bytes that replaced it', async () => {
      // Piece 1 is bad on disk at first; piece 3 waits for a verdict given later.
      const path = join(dir, `${name.split(' ')[0]}-refused.part`);
      const bad = Buffer.from(content.bytes);
      bad[PIECE + 1234] ^= 0xff;
      writeFileSync(path, bad);
      const counted: Array<[number, string]> = [];
      const judged: Array<[number, string]> = [];
      let releasePiece3!: (ok: boolean) => void;
      let prefix = 0;
      // The hasher, for the judge's refetch to advance once the new bytes are on disk.
      const made: { hasher?: FinishedPrefixHasher } = {};
      const { hasher, close } = await make(path, {
        pieceSize: PIECE,
        size: SIZE,
        onPiece: (i, d) => counted.push([i, d]),
        judge: (i, d) => {
          judged.push([i, d]);
          if (i === 1 && d !== goodPieces[1]) {
            // What the engine does: the bytes are taken off the prefix before the verdict...
            prefix = PIECE;
            // ...and their replacement lands (the refetch), after which the prefix grows again.
            setTimeout(() => {
              void (async () => {
                const file = await open(path, 'r+');
                await file.write(content.bytes, PIECE, PIECE, PIECE);
                await file.close();
                prefix = SIZE;
                made.hasher!.advance(SIZE);
              })();
            }, 50);
            return false;
          }
          if (i === 3) return new Promise<boolean>((resolve) => (releasePiece3 = resolve));
          return i % 2 === 0 ? true : Promise.resolve(true);
        },
      });
      made.hasher = hasher;
      try {
        for (const end of [1000, PIECE + 5, 3 * PIECE, SIZE]) {
          prefix = Math.max(prefix, end);
          hasher.advance(end);
        }
        await waitFor('piece 3 judged', () => judged.some(([i]) => i === 3), 10_000);
        // Piece 3 is being judged: nothing after it is hashed or counted, however far the prefix is.
        await new Promise((resolve) => setTimeout(resolve, 100));
        assert.deepEqual(
          counted.map(([i]) => i),
          [0, 1, 2],
        );
        assert.equal(prefix, SIZE);
        releasePiece3(true);
        const digest = await hasher.digest(SIZE);
        assert.equal(digest, content.sha256);
        assert.deepEqual(
          counted,
          goodPieces.map((d, i) => [i, d]),
        );
        // Piece 1 was judged twice: its bad bytes first, then the good ones.
        assert.deepEqual(
          judged.filter(([i]) => i === 1).map(([, d]) => d === goodPieces[1]),
          [false, true],
        );
      } finally {
        await close();
      }
    });

    it('without a judge digests every piece in one pass, as before', async () => {
      const path = join(dir, `${name.split(' ')[0]}-plain.part`);
      writeFileSync(path, content.bytes);
      const counted: Array<[number, string]> = [];
      const { hasher, close } = await make(path, { pieceSize: PIECE, onPiece: (i, d) => counted.push([i, d]) });
      try {
        hasher.advance(2 * PIECE + 1);
        assert.equal(await hasher.digest(SIZE), content.sha256);
        assert.deepEqual(
          counted,
          goodPieces.map((d, i) => [i, d]),
        );
      } finally {
        await close();
      }
    });
  });
}

describe('downloadBlob with pieceDigest (no manifest)', () => {
  it('refuses a peer piece that does not match, drops the peer, refetches, and counts only good pieces', async () => {
    const BIG = 2 * 16 * 1024 * 1024 + 123; // three 16 MiB pieces
    const big = randomContent(BIG);
    const digests = [0, 1, 2].map((i) => sha(big.bytes.subarray(i * 16 * 1024 * 1024, (i + 1) * 16 * 1024 * 1024)));
    const corrupt = Buffer.from(big.bytes);
    corrupt[16 * 1024 * 1024 + 99] ^= 0xff;
    const servers = await Promise.all([big.bytes, big.bytes, corrupt].map(() => new OriginServer().listen()));
    after(() => Promise.all(servers.map((server) => server.close())));
    const [originServer, goodServer, badServer] = servers as [OriginServer, OriginServer, OriginServer];
    originServer.setFile('/blob', big.bytes);
    goodServer.setFile('/blob', big.bytes);
    badServer.setFile('/blob', corrupt);
    const source = (server: OriginServer) =>
      sourceFor(server.url('/blob'), { maxRedirects: 0, stallTimeoutMs: 5_000, maxSockets: 4 });
    let badDropped = false;
    // Piece 1 only the bad peer has (until it is dropped), piece 2 only the origin.
    const slots: SourceSlot[] = [
      {
        id: 'origin',
        kind: 'origin',
        source: source(originServer),
        maxConcurrency: 2,
        preference: 1,
        has: (p) => p === 2,
      },
      {
        id: 'good',
        kind: 'peer',
        source: source(goodServer),
        maxConcurrency: 2,
        preference: 0,
        has: (p) => p === 0 || (p === 1 && badDropped),
      },
      { id: 'bad', kind: 'peer', source: source(badServer), maxConcurrency: 2, preference: 0, has: (p) => p === 1 },
    ];
    const asked: number[] = [];
    const counted: Array<[number, string]> = [];
    const part = join(dir, 'judged-download.part');
    const result = await downloadBlob({
      ...resolveFetchOptions({ chunkSize: '4MiB', retryBaseDelay: 5, retryMaxDelay: 20, retryAttempts: 3 }),
      computeSha256: true,
      sources: slots,
      partPath: part,
      produceManifest: true,
      sourceWaitMs: 10_000,
      onPieceVerified: (i, d) => counted.push([i, d]),
      onSourceDropped: (id) => (badDropped ||= id === 'bad'),
      // The digests come later than the bytes, as a leader's do.
      pieceDigest: (index) => {
        asked.push(index);
        return new Promise((resolve) => setTimeout(() => resolve(digests[index]), 30));
      },
    });
    for (const slot of slots) slot.source.close();
    assert.equal(await sha256OfFile(part), big.sha256);
    assert.equal(result.sha256, big.sha256);
    assert.deepEqual(result.manifest?.pieces, digests);
    assert.deepEqual(
      result.droppedSources.map((d) => [d.id, d.code]),
      [['bad', 'LOOM_ERR_DIGEST_MISMATCH']],
    );
    assert.deepEqual(
      counted,
      digests.map((d, i) => [i, d]),
    );
    // Piece 1 was asked about twice (the bad bytes, then the good peer's); piece 2 (origin only) never.
    assert.deepEqual(
      [...asked].sort((x, y) => x - y),
      [0, 1, 1],
    );
    assert.ok(result.bytesBySource.bad! > 0 && result.bytesBySource.good! > 0);
  });
});
