// The lean data path end to end: the raw client reads a range straight into the download's
// slabs and they land in the part file at their offsets, exact, with a pool too small for
// the body (reads wait for writes) and with the range's end cut short while it runs.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { PartFile } from '../../src/fetch/part-file.js';
import { SlabPool } from '../../src/fetch/slab-pool.js';
import { SlabSink } from '../../src/fetch/slab-sink.js';
import { RawHttpClient } from '../../src/sources/raw-http.js';
import { randomContent, sha256Of, tempDir } from '../helpers/fixtures.js';

const SIZE = 2 * 1024 * 1024 + 4321;
const content = randomContent(SIZE);
const origin = await new OriginServer().listen();
origin.setFile('/blob', content.bytes);
after(() => origin.close());
const dir = tempDir();
const client = new RawHttpClient();
after(() => client.close());

async function fetchInto(path: string, start: number, end: number, limit: () => number) {
  const part = await PartFile.open(path);
  await part.preallocate(SIZE, 'truncate');
  const written: Array<[number, number]> = [];
  const sink = new SlabSink(part, new SlabPool(64 * 1024, 2), start, limit, (at, length) =>
    written.push([at, at + length]),
  );
  const res = await client.get({
    url: new URL(origin.url('/blob')),
    headers: { range: `bytes=${start}-${end - 1}` },
    stallTimeoutMs: 5_000,
  });
  await res.readBody(sink);
  await sink.flush();
  await part.close();
  return { written, bytes: await readFile(path), position: sink.position };
}

describe('SlabSink with the raw client', () => {
  it('writes a range at its offsets, exact, through a pool smaller than the body', async () => {
    const { bytes, written } = await fetchInto(join(dir, 'a.part'), 1000, SIZE, () => SIZE);
    assert.equal(sha256Of(bytes.subarray(1000)), sha256Of(content.bytes.subarray(1000)));
    const total = written.reduce((sum, [s, e]) => sum + e - s, 0);
    assert.equal(total, SIZE - 1000);
  });

  it('stops at the range end when it shrinks mid-body, and writes nothing past it', async () => {
    let end = SIZE;
    let calls = 0;
    const cut = 300_000;
    const { bytes, position } = await fetchInto(join(dir, 'b.part'), 0, SIZE, () => {
      if (++calls === 3) end = cut;
      return end;
    });
    assert.equal(position, cut);
    assert.deepEqual(bytes.subarray(0, cut), content.bytes.subarray(0, cut));
    assert.ok(
      bytes.subarray(cut).every((b) => b === 0),
      'nothing written past the new end',
    );
  });
});
