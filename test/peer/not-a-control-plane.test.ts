// `loom fetch --control-plane URL` where URL answers, but not as a control plane (a mistyped
// address: an agent, a web server): the fetch goes on from the origin and says so, instead of
// waiting forever for a lease holder that a 200 without a lease answer seemed to name; and a
// --control-plane or --node-id that cannot work is a usage error, not a fetch without peers.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { randomContent, runLoom, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const content = randomContent(3 * 1024 * 1024 + 11);
const dir = tempDir('loom-not-cp-');

describe('a --control-plane URL that is not a control plane', () => {
  it('fetches from the origin alone, says so, and ends', { timeout: 60_000 }, async () => {
    const origin = await new OriginServer().listen();
    after(() => origin.close());
    origin.setFile('/m.bin', content.bytes);
    let asked = 0;
    const web: Server = createServer((req, res) => {
      asked++;
      req.resume();
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html>hello</html>');
    });
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    after(() => web.close());
    const { port } = web.address() as AddressInfo;
    const out = join(dir, 'm.bin');
    const run = await runLoom([
      'fetch',
      origin.url('/m.bin'),
      '-o',
      out,
      '--cache-dir',
      join(dir, 'cache'),
      '--control-plane',
      `http://127.0.0.1:${port}`,
      '--node-id',
      'node-z',
      '--progress',
      'none',
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(origin.bytesServed, content.bytes.length);
    assert.ok(asked > 0, 'the URL was asked');
    assert.match(run.stderr, /the control plane did not answer as one: fetching from the origin alone/);
  });

  it('a --control-plane that is not a URL, or a --node-id a control plane refuses, is a usage error (exit 2) before any byte', async () => {
    const origin = await new OriginServer().listen();
    after(() => origin.close());
    origin.setFile('/m.bin', content.bytes);
    for (const [flag, value, message] of [
      ['--control-plane', 'notaurl', /--control-plane "notaurl" is not a URL/],
      ['--node-id', 'a b/c', /node id "a b\/c" is not valid/],
    ] as const) {
      const args = ['fetch', origin.url('/m.bin'), '-o', join(dir, 'u.bin'), '--cache-dir', join(dir, 'cache-u')];
      args.push('--control-plane', flag === '--control-plane' ? value : 'http://127.0.0.1:9');
      if (flag === '--node-id') args.push('--node-id', value);
      const run = await runLoom(args);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, message);
      assert.equal(origin.bytesServed, 0, 'nothing was fetched');
    }
  });
});
