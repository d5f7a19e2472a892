// Who a file that fails its whole-file check is put on: the one peer that sent every byte
// that came from peers, never one of several (an honest relay would be counted against), and
// nobody when bytes from an earlier run, or unchecked ones from the origin, are in the file too.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { wholeFileBlame } from '../../src/fetch/whole-file-blame.js';

describe('wholeFileBlame', () => {
  it('puts the bytes on the one peer that sent every byte that came from peers', () => {
    const writers = [
      { id: 'origin', peer: false, bytes: 0 },
      { id: 'gpu-3', peer: true, bytes: 40_000_000 },
      { id: 'gpu-4', peer: true, bytes: 0 },
    ];
    for (const piecesChecked of [true, false]) {
      const blame = wholeFileBlame(writers, { resumedBytes: 0, piecesChecked });
      assert.equal(blame.culprit, 'gpu-3');
      assert.match(blame.said, /^peer gpu-3 sent every byte that came from peers \(40000000\): it served/);
    }
    // The origin's bytes passed the same piece checks as the peer's: the peer's are the wrong ones.
    const checked = wholeFileBlame([{ id: 'origin', peer: false, bytes: 1_048_576 }, writers[1]!], {
      resumedBytes: 0,
      piecesChecked: true,
    });
    assert.equal(checked.culprit, 'gpu-3');
    assert.match(
      checked.said,
      /^peer gpu-3 sent every byte that came from peers \(40000000, 1048576 from the origin\)/,
    );
  });

  it('blames no peer when the origin sent unchecked bytes too: they may be the wrong ones', () => {
    // An honest holder of the pinned digest sent its true pieces, the origin (whose bytes are
    // not the pin's) the rest: the whole file misses, and the holder must not be reported.
    // (a known digest without a manifest: no piece was checked, the origin's neither).
    const blame = wholeFileBlame(
      [
        { id: 'origin', peer: false, bytes: 1_048_576 },
        { id: 'gpu-3', peer: true, bytes: 40_000_000 },
      ],
      { resumedBytes: 0, piecesChecked: false },
    );
    assert.equal(blame.culprit, undefined);
    assert.equal(
      blame.said,
      'the bytes came from peers gpu-3 (40000000), 1048576 from the origin (unchecked: they may be the wrong ones): a whole-file check cannot tell which sent bad ones, so none is blamed',
    );
  });

  it('blames none of several peers, naming each with its bytes', () => {
    const blame = wholeFileBlame(
      [
        { id: 'gpu-3', peer: true, bytes: 30 },
        { id: 'gpu-4', peer: true, bytes: 12 },
      ],
      { resumedBytes: 0, piecesChecked: true },
    );
    assert.equal(blame.culprit, undefined);
    assert.equal(
      blame.said,
      'the bytes came from peers gpu-3 (30), gpu-4 (12): a whole-file check cannot tell which sent bad ones, so none is blamed',
    );
  });

  it('blames nobody when bytes from an earlier run are on disk, or none came from a peer', () => {
    const resumed = wholeFileBlame([{ id: 'gpu-3', peer: true, bytes: 30 }], { resumedBytes: 12, piecesChecked: true });
    assert.equal(resumed.culprit, undefined);
    assert.match(resumed.said, /gpu-3 \(30\), 12 from an earlier run: .* none is blamed$/);
    const origin = wholeFileBlame([{ id: 'origin', peer: false, bytes: 42 }], {
      resumedBytes: 0,
      piecesChecked: false,
    });
    assert.equal(origin.culprit, undefined);
    assert.equal(origin.said, 'every byte came from the origin, none from a peer');
  });
});
