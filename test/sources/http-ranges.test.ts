// Every 206 is checked against the probe and against what was asked: a known total equal
// to the probed size, a range within it and within the request, a body length equal to
// the range. A shorter range than asked is legal and used; a compressed range fails at once.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer, type Fault, type FaultContext, type OriginOptions } from '../support/origin-server.js';
import { BadResponseError, LoomError, fetchFile, type FetchOptions } from '../../src/index.js';
import { HttpSource } from '../../src/sources/http.js';
import { discardBody } from '../../src/sources/source.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const SIZE = 1024 * 1024 + 4321;
const content = randomContent(SIZE);
const FAST: FetchOptions = { workers: 4, chunkSize: 256 * 1024, maxRequestSize: 256 * 1024, retryBaseDelay: 5 };
const dir = tempDir();

const closers: Array<() => Promise<void>> = [];
after(async () => {
  await Promise.all(closers.map((close) => close()));
});
async function origin(options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  closers.push(() => server.close());
  server.setFile('/model.bin', content.bytes);
  return server;
}

/** A fault on every range request after the probe. */
function afterProbe(fault: (range: { start: number; end: number }) => Fault): (ctx: FaultContext) => Fault | undefined {
  return (ctx) => (ctx.index > 1 && ctx.range ? fault(ctx.range) : undefined);
}

function source(server: OriginServer): HttpSource {
  const s = new HttpSource(server.url('/model.bin'), { maxRedirects: 5, stallTimeoutMs: 5000, maxSockets: 2 });
  closers.push(async () => s.close());
  return s;
}

/** Probes, then opens [start, end) and returns the error it rejects with. */
async function openRangeError(server: OriginServer, start: number, end: number): Promise<unknown> {
  const s = source(server);
  const signal = new AbortController().signal;
  const probe = await s.probe([0, 1024], signal);
  probe.body.stream.resume();
  try {
    const body = await s.openRange(start, end, { size: SIZE, validator: probe.validator }, signal);
    discardBody(body);
    return undefined;
  } catch (err) {
    return err;
  }
}

describe('206 responses checked against the probe', () => {
  it('refuses a range whose total is unknown (*)', async () => {
    const server = await origin({
      fault: afterProbe((r) => ({ kind: 'content-range', value: `bytes ${r.start}-${r.end - 1}/*` })),
    });
    const err = await openRangeError(server, 4096, 8192);
    assert.ok(err instanceof BadResponseError, String(err));
    assert.match(err.message, /unknown total/);
  });

  it('refuses a range whose total is not the probed size, even with the same ETag', async () => {
    const server = await origin({
      fault: afterProbe((r) => ({ kind: 'content-range', value: `bytes ${r.start}-${r.end - 1}/${SIZE + 1}` })),
    });
    const err = await openRangeError(server, 4096, 8192);
    assert.ok(err instanceof BadResponseError, String(err));
    assert.match(err.message, new RegExp(`total of ${SIZE + 1} bytes, not the ${SIZE} probed`));
  });

  it('refuses a probe whose Content-Length is not the length of its Content-Range', async () => {
    const server = await origin({ fault: (ctx) => (ctx.index === 1 ? { kind: 'short-body', bytes: 100 } : undefined) });
    const err = await source(server)
      .probe([0, 4096], new AbortController().signal)
      .then(
        (probe) => probe.body.stream.resume(),
        (e: unknown) => e,
      );
    assert.ok(err instanceof BadResponseError, String(err));
    assert.match(err.message, /Content-Length 100, not the 4096 bytes/);
  });

  it('never makes a file from a probe whose range ends past its total', async () => {
    const small = randomContent(300 * 1024);
    const server = await origin({
      fault: (ctx) =>
        ctx.index === 1 && ctx.range
          ? { kind: 'content-range', value: `bytes 0-${ctx.range.end - 1}/1000` }
          : undefined,
    });
    server.setFile('/small.bin', small.bytes);
    const out = join(dir, 'impossible.bin');
    await assert.rejects(fetchFile(server.url('/small.bin'), out, { ...FAST, retryAttempts: 1 }), (err) => {
      assert.ok(err instanceof LoomError);
      assert.match(err.message, /past the total of 1000 bytes/);
      return true;
    });
    assert.equal(existsSync(out), false);
  });

  it('fails at once, without retries, on a gzip-encoded range', async () => {
    const server = await origin({
      fault: afterProbe((r) => ({
        kind: 'status',
        status: 206,
        headers: { 'content-encoding': 'gzip', 'content-range': `bytes ${r.start}-${r.end - 1}/${SIZE}` },
        body: 'compressed',
      })),
    });
    const out = join(dir, 'gzip.bin');
    await assert.rejects(fetchFile(server.url('/model.bin'), out, { ...FAST, workers: 1 }), (err) => {
      assert.ok(err instanceof LoomError);
      assert.equal(err.code, 'LOOM_ERR_CONTENT_ENCODING');
      assert.match(err.message, /Content-Encoding gzip/);
      return true;
    });
    assert.equal(server.requests.length, 2, 'the probe and one range request, no retry');
    assert.equal(existsSync(out), false);
  });
});

describe('a 206 shorter than asked', () => {
  it('is used, and the rest is asked for, not refused', async () => {
    const cap = 100 * 1000;
    let requests = 0;
    // A server that serves at most `cap` bytes per range, with a Content-Range that says so.
    const server = http.createServer((req, res) => {
      requests++;
      const match = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
      const headers = { etag: '"v1"', 'accept-ranges': 'bytes' };
      if (!match) {
        res.writeHead(200, { ...headers, 'content-length': SIZE }).end(content.bytes);
        return;
      }
      const start = Number(match[1]);
      const end = Math.min(Number(match[2]) + 1, SIZE, start + cap);
      res
        .writeHead(206, {
          ...headers,
          'content-range': `bytes ${start}-${end - 1}/${SIZE}`,
          'content-length': end - start,
        })
        .end(content.bytes.subarray(start, end));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => server.close(() => resolve())));
    server.on('connection', (socket) => closers.push(async () => void socket.destroy()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/model.bin`;

    const out = join(dir, 'short-ranges.bin');
    const result = await fetchFile(url, out, { ...FAST, retryAttempts: 1 });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(result.stats.retries, 0, 'a short range is not a failure');
    assert.ok(requests >= Math.ceil(SIZE / cap), `${requests} requests for ${Math.ceil(SIZE / cap)} capped ranges`);
  });
});
