// Ctrl-C while a node waits for the lease holder's first piece (planning, before its download
// starts) stops the fetch at once with exit 130, as it does during a download: the wait lasts
// as long as the holder renews its lease, which may be minutes on a slow origin.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { collect, randomContent, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { closersRunAfterAll, standInLeaseHolder, startTestControlPlane } from './peer-fixtures.js';

const content = randomContent(2 * 1024 * 1024 + 5);
const closers = closersRunAfterAll();
const dir = tempDir('loom-plan-interrupt-');

describe('Ctrl-C while waiting for the lease holder', () => {
  it('ends the fetch with exit 130 and nothing at the output', { timeout: 60_000 }, async () => {
    const origin = await new OriginServer().listen();
    closers.push(() => origin.close());
    origin.setFile('/m.bin', content.bytes);
    const url = origin.url('/m.bin');
    const cp = (await startTestControlPlane(closers)).url;
    // Holds the lease (renewed) and has announced no piece yet: a new node waits for one.
    await standInLeaseHolder({ cp, url, content: content.bytes, pieceSize: 16 * 1024 * 1024, closers, announced: [] });
    const out = join(dir, 'm.bin');
    const child = startLoom([
      'fetch',
      url,
      '-o',
      out,
      '--cache-dir',
      join(dir, 'cache'),
      '--control-plane',
      cp,
      '--node-id',
      'waiter',
      '--progress',
      'none',
    ]);
    const done = collect(child);
    // Waiting: the fetch has asked for the held lease (the stand-in asked once; it renews with PUT).
    const leaseAsks = async (): Promise<number> => {
      const text = await (await fetch(`${cp}/metrics`)).text();
      return text
        .split('\n')
        .filter(
          (line) =>
            line.startsWith('loom_cp_http_requests_total{') && /leases"/.test(line) && /method="POST"/.test(line),
        )
        .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
    };
    await waitFor('the waiter to ask for the lease', async () => (await leaseAsks()) >= 3 || undefined, 30_000);
    child.kill('SIGINT');
    const run = await done;
    assert.equal(run.code, 130, run.stderr);
    assert.equal(existsSync(out), false);
    assert.equal(origin.bytesServed, 0, 'the origin was not asked for the file');
  });
});
