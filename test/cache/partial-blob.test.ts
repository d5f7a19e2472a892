// The record of a download in progress that the node's agent reads: what it holds after
// pieces verify, that it is written whole, and that it is gone when the download ends.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, mkdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { cacheLayout, partPath } from '../../src/cache/cache-root.js';
import { PartialBlobRecord, type PartialBlobState } from '../../src/cache/partial-blob.js';
import { tempDir, waitFor } from '../helpers/fixtures.js';

const layout = cacheLayout(tempDir());
mkdirSync(layout.tmp, { recursive: true });
const ID = 'a'.repeat(64);

describe('PartialBlobRecord', () => {
  it('writes the verified pieces and their digests, sorted, on flush', () => {
    const record = new PartialBlobRecord(layout, ID, 10 * 1024, 4096, [], 10_000);
    record.markVerified(2, 'c'.repeat(64));
    record.markVerified(0, 'b'.repeat(64));
    record.flush();
    const state = JSON.parse(readFileSync(record.path, 'utf8')) as PartialBlobState;
    assert.deepEqual(state, {
      digest: ID,
      size: 10 * 1024,
      pieceSize: 4096,
      pieces: ['b'.repeat(64), '', 'c'.repeat(64)],
      verified: [0, 2],
    });
    assert.equal(partPath(layout, ID), `${layout.tmp}/${ID}.part`);
    // Written through a temp file: nothing else is left in tmp/.
    assert.deepEqual(readdirSync(layout.tmp), [`${ID}.pieces.json`]);
    record.remove();
  });

  it('writes on its own after the interval, and remove() deletes the record for good', async () => {
    const record = new PartialBlobRecord(layout, ID, 4096, 4096, ['d'.repeat(64)], 20);
    record.markVerified(0);
    await waitFor('the record to be written', () => existsSync(record.path));
    const state = JSON.parse(readFileSync(record.path, 'utf8')) as PartialBlobState;
    assert.deepEqual(state.verified, [0]);
    assert.deepEqual(state.pieces, ['d'.repeat(64)]);
    record.remove();
    assert.equal(existsSync(record.path), false);
    record.markVerified(0);
    record.flush();
    assert.equal(existsSync(record.path), false);
  });
});
