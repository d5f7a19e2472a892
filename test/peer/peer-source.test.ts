// PeerSource against a real HTTP server standing in for a peer's agent: exact bytes for an
// honest answer, and a typed error (retryable or not, as the status deserves) for every
// answer that breaks the range contract.
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { buffer } from 'node:stream/consumers';
import { after, describe, it } from 'node:test';
import { OriginServer, type Fault } from '../support/origin-server.js';
import { RawOrigin, type RawFault } from '../support/raw-origin.js';
import { freePort } from '../support/ports.js';
import { BadResponseError, HttpStatusError, LoomError, StallError } from '../../src/core/errors.js';
import { PeerSource } from '../../src/peer/peer-source.js';
import type { DirectBody } from '../../src/sources/source.js';
import { randomContent, sha256Of } from '../helpers/fixtures.js';

const SIZE = 1024 * 1024;
const content = randomContent(SIZE);
const DIGEST = content.sha256;
let fault: Fault | undefined;
const agent = await new OriginServer({ fault: () => fault }).listen();
agent.setFile(`/v1/blobs/${DIGEST}`, content.bytes);
after(() => agent.close());

function peer(): PeerSource {
  const source = new PeerSource({
    nodeId: 'node-a',
    baseUrl: agent.origin,
    digest: DIGEST,
    size: SIZE,
    token: 'secret',
    stallTimeoutMs: 5_000,
    maxSockets: 2,
  });
  after(() => source.close());
  return source;
}

const expect = { size: SIZE, validator: {} };
const signal = new AbortController().signal;

/** Reads a direct body as the engine does: into regions of `regionSize` bytes. */
async function readAll(body: DirectBody, regionSize = 64 * 1024, got?: Buffer[]): Promise<Buffer> {
  const parts: Buffer[] = got ?? [];
  let region = Buffer.alloc(regionSize);
  let filled = 0;
  const keepPartial = (): void => {
    if (filled > 0) parts.push(region.subarray(0, filled));
    region = Buffer.alloc(regionSize);
    filled = 0;
  };
  await body
    .readInto({
      region: () => region.subarray(filled),
      commit(length) {
        filled += length;
        if (filled === region.length) {
          parts.push(region);
          region = Buffer.alloc(regionSize);
          filled = 0;
        }
        return true;
      },
      ready: async () => undefined,
    })
    .finally(keepPartial);
  return Buffer.concat(parts);
}

async function bytesOf(source: PeerSource, start: number, end: number): Promise<Buffer> {
  return readAll(await source.openRange(start, end, expect, signal));
}

describe('PeerSource', () => {
  it('returns the exact bytes of the range asked for, with the bearer token sent', async () => {
    fault = undefined;
    const got = await bytesOf(peer(), 1000, 300_000);
    assert.equal(sha256Of(got), sha256Of(content.bytes.subarray(1000, 300_000)));
    assert.equal(agent.requests.at(-1)?.headers.authorization, 'Bearer secret');
    assert.equal(agent.requests.at(-1)?.range, 'bytes=1000-299999');
  });

  it('rejects a Content-Range for other bytes than asked', async () => {
    fault = { kind: 'content-range', value: `bytes 0-1023/${SIZE}` };
    await assert.rejects(bytesOf(peer(), 4096, 5120), BadResponseError);
  });

  it('rejects a Content-Range that claims another blob size', async () => {
    fault = { kind: 'content-range', value: `bytes 0-1023/${SIZE + 1}` };
    await assert.rejects(bytesOf(peer(), 0, 1024), BadResponseError);
  });

  it('treats 404 as not held (another source serves it) and 503 as busy (retryable, with its Retry-After)', async () => {
    fault = { kind: 'status', status: 404 };
    const missing = await peer()
      .openRange(0, 10, expect, signal)
      .catch((err: unknown) => err);
    assert.ok(missing instanceof HttpStatusError);
    assert.equal(missing.retryable, false);
    assert.equal(missing.status, 404);

    fault = { kind: 'status', status: 401 };
    const refused = await peer()
      .openRange(0, 10, expect, signal)
      .catch((err: unknown) => err);
    assert.ok(refused instanceof HttpStatusError);
    assert.equal(refused.retryable, false);

    fault = { kind: 'status', status: 503, headers: { 'retry-after': '2' } };
    const busy = await peer()
      .openRange(0, 10, expect, signal)
      .catch((err: unknown) => err);
    assert.ok(busy instanceof HttpStatusError);
    assert.equal(busy.retryable, true);
    assert.equal(busy.retryAfterMs, 2000);
    assert.equal(busy.status, 503);
  });

  it('a peer that finished answers 404 under the source id: the range is asked again under the published digest, and so is every later one', async () => {
    fault = undefined;
    const sourceId = 'ab'.repeat(32); // the name the blob had among peers before its digest was known
    let asked = 0;
    const source = new PeerSource({
      nodeId: 'node-a',
      baseUrl: agent.origin,
      digest: sourceId,
      size: SIZE,
      stallTimeoutMs: 5_000,
      maxSockets: 2,
      publishedName: () => {
        asked++;
        return Promise.resolve(DIGEST);
      },
    });
    after(() => source.close());
    const first = await bytesOf(source, 0, 4096);
    assert.equal(sha256Of(first), sha256Of(content.bytes.subarray(0, 4096)));
    assert.deepEqual(
      agent.requests.slice(-2).map((r) => [r.path, r.status]),
      [
        [`/v1/blobs/${sourceId}`, 404],
        [`/v1/blobs/${DIGEST}`, 206],
      ],
    );
    const second = await bytesOf(source, 4096, 8192);
    assert.equal(sha256Of(second), sha256Of(content.bytes.subarray(4096, 8192)));
    assert.equal(agent.requests.at(-1)?.path, `/v1/blobs/${DIGEST}`);
    assert.equal(asked, 1, 'the published digest was asked for once');
  });

  it('a peer whose port refuses connections is passed over at once (not retried), and stays so', async () => {
    const gone = await freePort();
    const source = new PeerSource({
      nodeId: 'node-gone',
      baseUrl: `http://127.0.0.1:${gone}`,
      digest: DIGEST,
      size: SIZE,
      stallTimeoutMs: 5_000,
      maxSockets: 2,
    });
    after(() => source.close());
    for (let i = 0; i < 2; i++) {
      const err = await source.openRange(0, 10, expect, signal).catch((e: unknown) => e);
      assert.ok(err instanceof HttpStatusError, String(err));
      assert.equal(err.retryable, false);
      assert.match(err.message, /peer node-gone passed over for this download: its agent refused the connection/);
    }
  });

  it('refuses an agent URL that is not http', () => {
    assert.throws(
      () =>
        new PeerSource({
          nodeId: 'x',
          baseUrl: 'file:///etc',
          digest: DIGEST,
          size: 1,
          stallTimeoutMs: 1000,
          maxSockets: 1,
        }),
      BadResponseError,
    );
  });

  it('probe answers with the manifest size and opens the first range', async () => {
    fault = undefined;
    const probe = await peer().probe([0, 16], signal);
    assert.equal(probe.size, SIZE);
    assert.equal(probe.acceptsRanges, true);
    assert.deepEqual(await buffer(probe.body.stream), content.bytes.subarray(0, 16));
  });
});

/** A peer scripted byte by byte (test/support/raw-origin.ts), serving the blob at any path. */
async function scripted(fault: (index: number) => RawFault | undefined): Promise<RawOrigin> {
  const server = await new RawOrigin(content.bytes, (request) => fault(request.index)).listen();
  after(() => server.close());
  return server;
}

function peerAt(server: RawOrigin, options: { stallTimeoutMs?: number; paceGraceMs?: number } = {}): PeerSource {
  const source = new PeerSource({
    nodeId: 'node-b',
    baseUrl: server.url('/'),
    digest: DIGEST,
    size: SIZE,
    stallTimeoutMs: options.stallTimeoutMs ?? 5_000,
    maxSockets: 1,
    ...(options.paceGraceMs !== undefined && { paceGraceMs: options.paceGraceMs }),
  });
  after(() => source.close());
  return source;
}

describe('PeerSource on the raw data path (a scripted peer)', () => {
  it('reads ranges into the engine regions over one kept-alive connection, a 503 and a 404 body read away on it', async () => {
    const busy = ['HTTP/1.1 503 Service Unavailable', 'Retry-After: 1', 'Content-Length: 19'];
    const missing = ['HTTP/1.1 404 Not Found', 'Content-Length: 19'];
    const server = await scripted((i) =>
      i === 2
        ? { kind: 'answer', head: busy, body: '{"error":"busy!!!"}' }
        : i === 3
          ? { kind: 'answer', head: missing, body: '{"error":"gone!!!"}' }
          : undefined,
    );
    const source = peerAt(server);
    const first = await bytesOf(source, 0, 200_000);
    assert.equal(sha256Of(first), sha256Of(content.bytes.subarray(0, 200_000)));
    const busyErr = await source.openRange(200_000, 300_000, expect, signal).catch((e: unknown) => e);
    assert.ok(busyErr instanceof HttpStatusError && busyErr.status === 503 && busyErr.retryable, String(busyErr));
    const missingErr = await source.openRange(200_000, 300_000, expect, signal).catch((e: unknown) => e);
    assert.ok(missingErr instanceof HttpStatusError && missingErr.status === 404 && !missingErr.retryable);
    // Regions smaller than a read, and not a divisor of the range: every byte lands in place.
    const rest = readAll(await source.openRange(200_000, SIZE, expect, signal), 4093);
    assert.equal(sha256Of(await rest), sha256Of(content.bytes.subarray(200_000)));
    assert.equal(server.requests.length, 4);
    assert.equal(server.connections, 1, 'every request, the refused ones too, on one connection');
  });

  it('rejects a Content-Length that disagrees with the Content-Range, before reading a byte', async () => {
    const server = await scripted(() => ({
      kind: 'answer',
      head: ['HTTP/1.1 206 Partial Content', `Content-Range: bytes 0-1023/${SIZE}`, 'Content-Length: 2048'],
      body: content.bytes.subarray(0, 2048),
    }));
    const err = await peerAt(server)
      .openRange(0, 1024, expect, signal)
      .catch((e: unknown) => e);
    assert.ok(err instanceof BadResponseError, String(err));
    assert.match(err.message, /Content-Length 2048/);
  });

  it('rejects a 206 without a Content-Length (chunked): an agent always sends one', async () => {
    const server = await scripted(() => ({ kind: 'chunked' }));
    const err = await peerAt(server)
      .openRange(0, 1024, expect, signal)
      .catch((e: unknown) => e);
    assert.ok(err instanceof BadResponseError, String(err));
  });

  it('a peer that closes mid-body: the read fails after exactly the bytes sent, and the next range is exact', async () => {
    const server = await scripted((i) => (i === 1 ? { kind: 'cut', afterBytes: 100_000 } : undefined));
    const source = peerAt(server);
    const got: Buffer[] = [];
    const err = await readAll(await source.openRange(0, 500_000, expect, signal), 64 * 1024, got).catch(
      (e: unknown) => e,
    );
    assert.ok(err instanceof LoomError, String(err));
    const prefix = Buffer.concat(got);
    assert.equal(prefix.length, 100_000);
    assert.equal(sha256Of(prefix), sha256Of(content.bytes.subarray(0, 100_000)));
    // Not passed over: a cut connection is retried (on a new connection).
    const next = await bytesOf(source, 100_000, 500_000);
    assert.equal(sha256Of(next), sha256Of(content.bytes.subarray(100_000, 500_000)));
    assert.equal(server.connections, 2);
  });

  it('a peer that stalls mid-body is passed over: the read fails, later ones at once without a request', async () => {
    const stalling = await new OriginServer({ fault: () => ({ kind: 'stall', afterBytes: 64 * 1024 }) }).listen();
    after(() => stalling.close());
    stalling.setFile(`/v1/blobs/${DIGEST}`, content.bytes);
    const source = new PeerSource({
      nodeId: 'node-stall',
      baseUrl: stalling.origin,
      digest: DIGEST,
      size: SIZE,
      stallTimeoutMs: 300,
      maxSockets: 1,
    });
    after(() => source.close());
    const err = await bytesOf(source, 0, SIZE).catch((e: unknown) => e);
    assert.ok(err instanceof HttpStatusError && !err.retryable, String(err));
    assert.match(err.message, /passed over for this download: .*mid-response/);
    const asked = stalling.requests.length;
    const again = await source.openRange(0, 10, expect, signal).catch((e: unknown) => e);
    assert.equal(again, err);
    assert.equal(stalling.requests.length, asked, 'no request to a peer passed over');
  });

  it('a peer that trickles is passed over once its grace is spent', async () => {
    const slow = await new OriginServer({ fault: () => ({ kind: 'slow', bytesPerSecond: 16 * 1024 }) }).listen();
    after(() => slow.close());
    slow.setFile(`/v1/blobs/${DIGEST}`, content.bytes);
    const source = new PeerSource({
      nodeId: 'node-slow',
      baseUrl: slow.origin,
      digest: DIGEST,
      size: SIZE,
      stallTimeoutMs: 5_000,
      maxSockets: 1,
      paceGraceMs: 600,
    });
    after(() => source.close());
    const err = await bytesOf(source, 0, SIZE).catch((e: unknown) => e);
    assert.ok(err instanceof HttpStatusError && !err.retryable, String(err));
    assert.match(err.message, /passed over for this download: \d+ KiB\/s, below 512 KiB\/s/);
  });

  it('a probe through the raw path streams exactly the first range and learns the size', async () => {
    const server = await scripted(() => undefined);
    const source = new PeerSource({
      nodeId: 'node-b',
      baseUrl: server.url('/'),
      digest: DIGEST,
      size: undefined,
      stallTimeoutMs: 5_000,
      maxSockets: 1,
    });
    after(() => source.close());
    const probe = await source.probe([0, 700_000], signal);
    assert.equal(probe.size, SIZE);
    assert.equal(sha256Of(await buffer(probe.body.stream)), sha256Of(content.bytes.subarray(0, 700_000)));
    // The connection went back to the pool once the stream was read.
    await bytesOf(source, 700_000, SIZE);
    assert.equal(server.connections, 1);
  });
});

describe('PeerSource against a peer that never finishes its response head', () => {
  it(
    'gives the request up after the stall timeout, however slowly the head trickles in',
    { timeout: 20_000 },
    async () => {
      // A slowloris answer: a byte of head every 100 ms, never the blank line. Each byte resets
      // a per-read stall timer; the head as a whole must arrive within the stall timeout.
      const sockets = new Set<net.Socket>();
      const server = net.createServer((socket) => {
        sockets.add(socket);
        socket.on('error', () => undefined);
        const head = Buffer.from(
          `HTTP/1.1 206 Partial Content\r\nContent-Length: 1024\r\n${'X-Pad: a\r\n'.repeat(1000)}`,
        );
        let at = 0;
        const timer = setInterval(() => {
          if (socket.destroyed || at >= head.length) return clearInterval(timer);
          socket.write(head.subarray(at, ++at));
        }, 100);
        socket.on('close', () => clearInterval(timer));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      after(async () => {
        for (const socket of sockets) socket.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      });
      const source = new PeerSource({
        nodeId: 'node-slowloris',
        baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        digest: DIGEST,
        size: SIZE,
        stallTimeoutMs: 1_000,
        maxSockets: 1,
      });
      after(() => source.close());
      const err = await source.openRange(0, 1024, expect, signal).catch((e: unknown) => e);
      assert.ok(err instanceof StallError, String(err));
      assert.match(err.message, /head/);
    },
  );
});
