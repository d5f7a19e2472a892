// One slow early range must not hold the finished prefix (and so the sha256, which can only
// follow it) back while the rest of the file arrives: the download cuts that range and
// gives its back half to a worker before starting ranges ahead of it. Asserted on bytes:
// how far behind the end of the file the prefix was when the last byte arrived.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { fetchFile } from '../../src/index.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const MiB = 1024 * 1024;
// 64 MiB: the size from which the hash runs on its own thread, as for model weights.
const SIZE = 64 * MiB;
const dir = tempDir();
const content = randomContent(SIZE);
const servers: OriginServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

describe('a slow early range', () => {
  it('is cut while the download runs, so the prefix is not held back to the end', async () => {
    let slowServed = false;
    // Every connection at 4 MiB/s (4 workers: ~4 s for the file); the first request for the
    // chunk after the probe's at 128 KiB/s, so uncut that MiB alone takes 8 s.
    const server = await new OriginServer({
      rateLimitBytesPerSecond: 4 * MiB,
      fault: (ctx) => {
        if (slowServed || ctx.range?.start !== MiB) return undefined;
        slowServed = true;
        return { kind: 'slow', bytesPerSecond: 128 * 1024 };
      },
    }).listen();
    servers.push(server);
    server.setFile('/straggler.bin', content.bytes);
    const out = join(dir, 'straggler.bin');
    const result = await fetchFile(server.url('/straggler.bin'), out, {
      workers: 4,
      chunkSize: MiB,
      computeSha256: true,
      fsync: false,
    });
    assert.equal(result.sha256, content.sha256);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(slowServed, 'the slow response was served');
    const behind = result.stats.prefixBehindAtLastByte;
    assert.ok(behind !== undefined, 'the prefix at the last byte is known');
    // Held back by the slow range, the prefix ends at 1-2 MiB until its last byte, and the
    // whole rest of the file (62-63 MiB) is hashed after it; cut early, the last ranges to
    // finish lie in the last few chunks.
    assert.ok(behind <= SIZE / 4, `the prefix ended ${(behind / MiB).toFixed(1)} MiB before the end at the last byte`);
    assert.ok(result.stats.splits >= 1, 'the slow range was cut');
    // Cutting a slow response wastes little: its socket holds few bytes past the cut.
    assert.ok(server.bytesServed < SIZE + 4 * MiB, `the origin served ${server.bytesServed} bytes`);
  });
});
