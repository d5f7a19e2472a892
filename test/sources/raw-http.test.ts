// The raw keep-alive client of the lean data path, against real HTTP servers on loopback:
// exact bytes into the caller's regions, connections reused, a sink that stops early, a
// sink that makes reads wait, bodies it does not read, stalls and aborts.
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { AbortedError, StallError } from '../../src/core/errors.js';
import { RawHttpClient, UnsupportedResponse } from '../../src/sources/raw-http.js';
import type { BodySink } from '../../src/sources/source.js';
import { randomContent, sha256Of } from '../helpers/fixtures.js';
import { unacceptingListener } from '../support/unaccepting-listener.js';
import { RawOrigin } from '../support/raw-origin.js';

const SIZE = 3 * 1024 * 1024 + 777;
const content = randomContent(SIZE);
const origin = await new OriginServer().listen();
origin.setFile('/blob', content.bytes);
after(() => origin.close());

/** Collects a body in regions of `regionSize`; `stopAt` bytes: say no more is wanted. */
function collector(regionSize: number, stopAt = Infinity): BodySink & { bytes: () => Buffer; commits: number } {
  const parts: Buffer[] = [];
  let region = Buffer.alloc(regionSize);
  let filled = 0;
  let total = 0;
  let commits = 0;
  return {
    region: () => region.subarray(filled),
    commit(length) {
      commits++;
      filled += length;
      total += length;
      if (filled === region.length) {
        parts.push(region);
        region = Buffer.alloc(regionSize);
        filled = 0;
      }
      return total < stopAt;
    },
    ready: async () => undefined,
    bytes: () => Buffer.concat([...parts, region.subarray(0, filled)]),
    get commits() {
      return commits;
    },
  };
}

describe('RawHttpClient', () => {
  it('reads a range body into the caller regions, exact, and reuses the connection', async () => {
    const client = new RawHttpClient();
    after(() => client.close());
    origin.resetStats();
    const opened = origin.openConnections;
    for (const [start, end] of [
      [0, 1_000_000],
      [1_000_000, SIZE],
    ] as const) {
      const res = await client.get({
        url: new URL(origin.url('/blob')),
        headers: { range: `bytes=${start}-${end - 1}` },
        stallTimeoutMs: 5_000,
      });
      assert.equal(res.status, 206);
      assert.equal(res.headers['content-range'], `bytes ${start}-${end - 1}/${SIZE}`);
      const sink = collector(64 * 1024 + 3);
      await res.readBody(sink);
      assert.equal(sha256Of(sink.bytes()), sha256Of(content.bytes.subarray(start, end)));
    }
    assert.equal(origin.requests.length, 2);
    assert.equal(origin.openConnections - opened, 1, 'both requests went over one keep-alive connection');
  });

  it('reads small bodies that arrive whole with their head, back to back on one connection', async () => {
    const own = await new OriginServer().listen();
    own.setFile('/blob', content.bytes);
    after(() => own.close());
    const client = new RawHttpClient();
    after(() => client.close());
    const url = new URL(own.url('/blob'));
    for (const [start, end] of [
      [0, 100],
      [100, 300],
      [300, 301],
      [5000, 9000],
    ] as const) {
      const res = await client.get({ url, headers: { range: `bytes=${start}-${end - 1}` }, stallTimeoutMs: 5_000 });
      assert.equal(res.headers['content-range'], `bytes ${start}-${end - 1}/${SIZE}`);
      const sink = collector(1024);
      await res.readBody(sink);
      assert.equal(sha256Of(sink.bytes()), sha256Of(content.bytes.subarray(start, end)));
    }
    assert.equal(own.openConnections, 1, 'all four over one keep-alive connection');
  });

  it('opens no more connections than its limit: a request waits for one to be free', async () => {
    const own = await new OriginServer().listen();
    own.setFile('/blob', content.bytes);
    after(() => own.close());
    const client = new RawHttpClient({ maxConnections: 1 });
    after(() => client.close());
    const url = new URL(own.url('/blob'));
    const get = (start: number, end: number) =>
      client.get({ url, headers: { range: `bytes=${start}-${end - 1}` }, stallTimeoutMs: 5_000 });
    const first = get(0, 1000);
    const second = get(1000, 2000);
    const a = collector(1024);
    await (await first).readBody(a);
    const b = collector(1024);
    await (await second).readBody(b);
    assert.deepEqual(Buffer.concat([a.bytes(), b.bytes()]), content.bytes.subarray(0, 2000));
    assert.equal(own.openConnections, 1);
  });

  it('closes the connection when the sink wants no more, and the next request still works', async () => {
    const client = new RawHttpClient();
    after(() => client.close());
    const url = new URL(origin.url('/blob'));
    const res = await client.get({ url, headers: { range: `bytes=0-${SIZE - 1}` }, stallTimeoutMs: 5_000 });
    const sink = collector(32 * 1024, 100_000);
    await res.readBody(sink);
    const got = sink.bytes();
    assert.ok(got.length >= 100_000 && got.length < SIZE);
    assert.deepEqual(got, content.bytes.subarray(0, got.length));
    const again = await client.get({ url, headers: { range: 'bytes=10-19' }, stallTimeoutMs: 5_000 });
    const small = collector(1024);
    await again.readBody(small);
    assert.deepEqual(small.bytes(), content.bytes.subarray(10, 20));
  });

  it('waits for the sink when it has no room, without losing or reordering bytes', async () => {
    const client = new RawHttpClient();
    after(() => client.close());
    const parts: Buffer[] = [];
    let region: Buffer | undefined = Buffer.alloc(50_000);
    let filled = 0;
    let wake: (() => void) | undefined;
    const sink: BodySink = {
      region: () => region?.subarray(filled),
      commit(length) {
        filled += length;
        if (filled === region!.length) {
          parts.push(region!);
          region = undefined;
          filled = 0;
          // The "disk" gives the region back a little later.
          setTimeout(() => {
            region = Buffer.alloc(50_000);
            wake?.();
          }, 2);
        }
        return true;
      },
      ready: () => new Promise<void>((resolve) => (region ? resolve() : (wake = resolve))),
    };
    const res = await client.get({
      url: new URL(origin.url('/blob')),
      headers: { range: `bytes=0-${SIZE - 1}` },
      stallTimeoutMs: 5_000,
    });
    await res.readBody(sink);
    if (region && filled) parts.push(region.subarray(0, filled));
    assert.equal(sha256Of(Buffer.concat(parts)), content.sha256);
  });

  it('refuses a body without Content-Length (chunked) so the caller can fall back', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(206, { 'transfer-encoding': 'chunked' });
      res.end('hello');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    after(() => server.close());
    const client = new RawHttpClient();
    after(() => client.close());
    const { port } = server.address() as AddressInfo;
    const res = await client.get({ url: new URL(`http://127.0.0.1:${port}/x`), headers: {}, stallTimeoutMs: 5_000 });
    assert.equal(res.contentLength, undefined);
    await assert.rejects(res.readBody(collector(1024)), UnsupportedResponse);
  });

  it('fails a response that stops sending with StallError, and an aborted one with AbortedError', async () => {
    const sockets = new Set<Socket>();
    const server = http.createServer((_req, res) => {
      res.writeHead(206, { 'content-length': 1000 });
      res.write(Buffer.alloc(10));
      // …and nothing more.
    });
    server.on('connection', (socket: Socket) => sockets.add(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    after(() => {
      for (const socket of sockets) socket.destroy();
      server.close();
    });
    const client = new RawHttpClient();
    after(() => client.close());
    const { port } = server.address() as AddressInfo;
    const url = new URL(`http://127.0.0.1:${port}/x`);
    const stalled = await client.get({ url, headers: {}, stallTimeoutMs: 200 });
    await assert.rejects(stalled.readBody(collector(1024)), StallError);

    const controller = new AbortController();
    const held = await client.get({ url, headers: {}, stallTimeoutMs: 10_000, signal: controller.signal });
    const reading = held.readBody(collector(1024));
    controller.abort();
    await assert.rejects(reading, AbortedError);
  });

  it('gives up on a host that takes no connection within the stall timeout', { timeout: 30_000 }, async () => {
    const listener = await unacceptingListener();
    after(() => listener.close());
    const client = new RawHttpClient();
    after(() => client.close());
    await assert.rejects(
      client.get({ url: new URL(`http://127.0.0.1:${listener.port}/x`), headers: {}, stallTimeoutMs: 300 }),
      (err) => {
        assert.ok(err instanceof StallError, String(err));
        assert.match(err.message, new RegExp(`no connection to 127\\.0\\.0\\.1:${listener.port} within 300 ms`));
        return true;
      },
    );
  });

  it('parses a response head that arrives in pieces, with body bytes in the same read as its end', async () => {
    const server = net.createServer((socket) => {
      socket.once('data', () => {
        socket.write('HTTP/1.1 206 Partial Content\r\nContent-Le');
        setTimeout(() => socket.write('ngth: 11\r\nX-Two: a\r\nX-Two: b\r\n\r\nhel'), 20);
        setTimeout(() => socket.write('lo world'), 40);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    after(() => server.close());
    const client = new RawHttpClient();
    after(() => client.close());
    const { port } = server.address() as AddressInfo;
    const res = await client.get({ url: new URL(`http://127.0.0.1:${port}/x`), headers: {}, stallTimeoutMs: 5_000 });
    assert.equal(res.status, 206);
    assert.equal(res.contentLength, 11);
    assert.equal(res.headers['x-two'], 'a, b');
    const sink = collector(4);
    await res.readBody(sink);
    assert.equal(sink.bytes().toString(), 'hello world');
  });

  it('destroying a response after its body was read leaves its kept-alive connection to the next request', async () => {
    const client = new RawHttpClient({ maxConnections: 1 });
    after(() => client.close());
    const opened = origin.openConnections;
    const url = new URL(origin.url('/blob'));
    const first = await client.get({ url, headers: { range: 'bytes=0-99999' }, stallTimeoutMs: 5_000 });
    await first.readBody(collector(64 * 1024));
    const second = await client.get({ url, headers: { range: 'bytes=100000-299999' }, stallTimeoutMs: 5_000 });
    // A late destroy of the first (a stream wrapper ending, a caller cleaning up) must not
    // cut the connection the second is reading on.
    first.destroy();
    const sink = collector(64 * 1024);
    await second.readBody(sink);
    assert.equal(sha256Of(sink.bytes()), sha256Of(content.bytes.subarray(100_000, 300_000)));
    assert.equal(origin.openConnections - opened, 1);
  });

  for (const [what, first, second] of [
    ['a small body that arrives whole with its head', [0, 1000], [1000, 2000]],
    ['a large body read into the caller regions', [0, 1_500_000], [1_500_000, 1_600_000]],
  ] as const) {
    it(`never reads bytes a server sent past ${what} as the next response: the next request goes on a fresh connection`, async () => {
      // After the first body, the origin sends a whole 206 for the second range, of wrong
      // bytes: read as the answer to the second request (sent on the same connection),
      // they would be taken as its body.
      const [start, end] = second;
      const smuggled = Buffer.alloc(end - start, 'X');
      const server = await new RawOrigin(content.bytes, (r) =>
        r.index === 1
          ? {
              kind: 'trailing',
              bytes: `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${start}-${end - 1}/${SIZE}\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled.toString('latin1')}`,
            }
          : undefined,
      ).listen();
      after(() => server.close());
      const client = new RawHttpClient({ maxConnections: 1 });
      after(() => client.close());
      const url = new URL(server.url());
      const get = ([from, to]: readonly [number, number]) =>
        client.get({ url, headers: { range: `bytes=${from}-${to - 1}` }, stallTimeoutMs: 5_000 });
      // Both at once: the second waits for the one connection and is sent as soon as the
      // first body is read.
      const a = get(first);
      const b = get(second);
      const sinkA = collector(64 * 1024);
      await (await a).readBody(sinkA);
      const sinkB = collector(64 * 1024);
      const resB = await b;
      await resB.readBody(sinkB);
      assert.equal(sha256Of(sinkA.bytes()), sha256Of(content.bytes.subarray(...first)));
      assert.equal(resB.headers['content-range'], `bytes ${start}-${end - 1}/${SIZE}`);
      assert.equal(sha256Of(sinkB.bytes()), sha256Of(content.bytes.subarray(start, end)), 'the real bytes');
      assert.deepEqual(
        server.requests.map((r) => r.connection),
        [1, 2],
        'the second request on a fresh connection',
      );
    });
  }

  it('reads a head larger than its first scratch buffer (40 KiB of headers), and refuses one over 64 KiB', async () => {
    const body = randomContent(100_000).bytes;
    const server = net.createServer((socket) => {
      // The client hangs up on the head over 64 KiB.
      socket.on('error', () => undefined);
      socket.on('data', (request) => {
        const big = request.toString('latin1').startsWith('GET /big ');
        const filler = 'x'.repeat(big ? 70_000 : 40_000);
        // In three writes, the last with the head's end and the start of the body.
        socket.write(
          `HTTP/1.1 206 Partial Content\r\nContent-Length: ${body.length}\r\nX-Filler: ${filler.slice(0, 10_000)}`,
        );
        setTimeout(() => socket.write(filler.slice(10_000)), 10);
        setTimeout(() => socket.write(Buffer.concat([Buffer.from('\r\n\r\n'), body])), 20);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    after(() => server.close());
    const client = new RawHttpClient();
    after(() => client.close());
    const { port } = server.address() as AddressInfo;
    const res = await client.get({ url: new URL(`http://127.0.0.1:${port}/x`), headers: {}, stallTimeoutMs: 5_000 });
    assert.equal(res.status, 206);
    assert.equal(res.headers['x-filler']!.length, 40_000);
    const sink = collector(16 * 1024);
    await res.readBody(sink);
    assert.equal(sha256Of(sink.bytes()), sha256Of(body));
    await assert.rejects(
      client.get({ url: new URL(`http://127.0.0.1:${port}/big`), headers: {}, stallTimeoutMs: 5_000 }),
      /larger than 64 KiB/,
    );
  });
});
