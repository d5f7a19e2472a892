// The prefix hasher on a worker thread: the whole-file sha256 and every piece's digest, in
// order, as the finished prefix grows in uneven steps; a file shorter than claimed fails
// the digest instead of hanging; a hasher closed early lets the process go; a large
// download is checked with it.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { ThreadedPrefixHasher } from '../../src/fetch/hash-thread.js';
import { DigestMismatchError, fetchFile } from '../../src/index.js';
import { randomContent, tempDir } from '../helpers/fixtures.js';

const dir = tempDir();
const PIECE = 1024 * 1024;
const sha = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

describe('ThreadedPrefixHasher', () => {
  it('digests the file and each piece in order as the prefix advances', async () => {
    const content = randomContent(5 * PIECE + 12_345);
    const path = join(dir, 'a.part');
    writeFileSync(path, content.bytes);
    const pieces: Array<[number, string]> = [];
    const hasher = new ThreadedPrefixHasher(
      path,
      { pieceSize: PIECE, onPiece: (i, d) => pieces.push([i, d]) },
      300_000,
    );
    for (const end of [10, 700_000, PIECE, 3 * PIECE + 5, 3 * PIECE + 5, 4 * PIECE]) hasher.advance(end);
    const digest = await hasher.digest(content.bytes.length);
    assert.equal(digest, content.sha256);
    const expected = Array.from({ length: 6 }, (_, i): [number, string] => [
      i,
      sha(content.bytes.subarray(i * PIECE, Math.min((i + 1) * PIECE, content.bytes.length))),
    ]);
    assert.deepEqual(pieces, expected);
  });

  it('fails the digest when the file ends before the size asked for', async () => {
    const path = join(dir, 'short.part');
    writeFileSync(path, Buffer.alloc(1000, 7));
    const hasher = new ThreadedPrefixHasher(path, undefined, 4096);
    await assert.rejects(hasher.digest(2000), /unexpected end of .*short\.part at 1000/);
  });

  it('is what a large download is checked with: the right digest passes, a wrong one keeps nothing', async () => {
    // 64 MiB: the size from which the engine hashes on a worker thread.
    const content = randomContent(64 * PIECE + 1);
    const origin = await new OriginServer().listen();
    after(() => origin.close());
    origin.setFile('/big.bin', content.bytes);
    const out = join(dir, 'big.bin');
    const result = await fetchFile(origin.url('/big.bin'), out, { sha256: content.sha256, fsync: false });
    assert.equal(result.sha256, content.sha256);
    assert.ok(result.stats.lastByteToDigestSeconds !== undefined);
    const wrong = join(dir, 'wrong.bin');
    await assert.rejects(fetchFile(origin.url('/big.bin'), wrong, { sha256: 'a'.repeat(64), fsync: false }), (err) => {
      assert.ok(err instanceof DigestMismatchError, String(err));
      assert.equal(err.actual, content.sha256);
      return true;
    });
    assert.equal(existsSync(wrong), false);
  });

  it('can be closed before the digest (a failed download)', () => {
    const path = join(dir, 'closed.part');
    writeFileSync(path, Buffer.alloc(10));
    const hasher = new ThreadedPrefixHasher(path, undefined, 4096);
    hasher.advance(5);
    hasher.close();
  });
});
