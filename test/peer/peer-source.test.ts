// PeerSource against a real HTTP server standing in for a peer's agent: exact bytes for an
// honest answer, and a typed error (retryable or not, as the status deserves) for every
// answer that breaks the range contract.
import assert from 'node:assert/strict';
import { buffer } from 'node:stream/consumers';
import { after, describe, it } from 'node:test';
import { OriginServer, type Fault } from '../support/origin-server.js';
import { freePort } from '../support/ports.js';
import { BadResponseError, HttpStatusError } from '../../src/core/errors.js';
import { PeerSource } from '../../src/peer/peer-source.js';
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

async function bytesOf(source: PeerSource, start: number, end: number): Promise<Buffer> {
  const body = await source.openRange(start, end, expect, signal);
  const chunks: Buffer[] = [];
  for await (const chunk of body.stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
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
