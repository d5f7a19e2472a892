// The lean data path (plain-HTTP ranges read straight into the write slabs) inside the
// engine, against an origin scripted to the byte: keep-alive connections reused across
// requests, a Content-Range that lies, bodies cut short, `Connection: close`, a kept-alive
// connection closed as it is reused, bytes past a body, an informational answer, a chunked
// body. Each asserts the output's sha256 (or the error code and no output).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LoomError, fetchFile, type FetchOptions } from '../../src/index.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';
import { RawOrigin, type RawFault, type RawRequestSeen } from '../support/raw-origin.js';

const SIZE = 2 * 1024 * 1024 + 12_345;
const content = randomContent(SIZE);
const dir = tempDir();
const OPTIONS: FetchOptions = { workers: 2, chunkSize: '256KiB', retryBaseDelay: 5, retryMaxDelay: 20 };
const origins: RawOrigin[] = [];
after(() => Promise.all(origins.map((o) => o.close())));

async function origin(fault?: (request: RawRequestSeen) => RawFault | undefined): Promise<RawOrigin> {
  const server = await new RawOrigin(content.bytes, fault).listen();
  origins.push(server);
  return server;
}

/** Range requests after the probe (the probe is the first request, over node:http). */
const ranges = (server: RawOrigin): RawRequestSeen[] => server.requests.filter((r) => r.index > 1);

async function fetchExpectingError(server: RawOrigin, name: string, options: FetchOptions = {}): Promise<LoomError> {
  const out = join(dir, name);
  let caught: unknown;
  await fetchFile(server.url(), out, { ...OPTIONS, ...options }).catch((err: unknown) => (caught = err));
  assert.ok(caught instanceof LoomError, String(caught));
  assert.equal(existsSync(out), false, 'no output file');
  return caught;
}

describe('the raw data path in the engine', () => {
  it('reads every range over kept-alive connections, at most one per worker', async () => {
    const server = await origin();
    const out = join(dir, 'plain.bin');
    const result = await fetchFile(server.url(), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(result.stats.retries, 0);
    const rangeConnections = new Set(ranges(server).map((r) => r.connection));
    assert.ok(ranges(server).length >= 8, `${ranges(server).length} range requests`);
    assert.ok(rangeConnections.size <= 2, `${rangeConnections.size} connections for the ranges`);
    assert.ok(
      !rangeConnections.has(server.requests[0]!.connection),
      'the probe connection is node:http, the ranges are not',
    );
    assert.equal(server.bodyBytes, SIZE, 'no byte fetched twice');
  });

  it('refuses a Content-Range that starts elsewhere, and the retry makes the file exact', async () => {
    const server = await origin((r) => {
      if (r.index !== 3 || !r.range) return undefined;
      const { start, end } = r.range;
      const body = content.bytes.subarray(start + 1, end);
      return {
        kind: 'answer',
        head: [
          'HTTP/1.1 206 Partial Content',
          'ETag: "v1"',
          `Content-Range: bytes ${start + 1}-${end - 1}/${SIZE}`,
          `Content-Length: ${body.length}`,
        ],
        body,
      };
    });
    const out = join(dir, 'lie-once.bin');
    const result = await fetchFile(server.url(), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(result.stats.retries, 1);
  });

  it('gives up with a bad response as the cause, and no file, when every range ends past the total', async () => {
    const server = await origin((r) =>
      r.index > 1 && r.range
        ? {
            kind: 'answer',
            head: [
              'HTTP/1.1 206 Partial Content',
              'ETag: "v1"',
              `Content-Range: bytes ${r.range.start}-${SIZE + 99}/${SIZE}`,
              `Content-Length: ${SIZE + 100 - r.range.start}`,
            ],
            body: Buffer.alloc(SIZE + 100 - r.range.start),
          }
        : undefined,
    );
    const err = await fetchExpectingError(server, 'past-total.bin', { retryAttempts: 2 });
    assert.equal(err.code, 'LOOM_ERR_NETWORK', 'given up after the attempts');
    assert.equal((err.cause as LoomError).code, 'LOOM_ERR_BAD_RESPONSE');
    assert.match(err.message, /another range than asked for/);
  });

  it('gives up with a bad response as the cause when Content-Length is not the length of the Content-Range', async () => {
    const server = await origin((r) => {
      if (r.index === 1 || !r.range) return undefined;
      const { start, end } = r.range;
      const body = content.bytes.subarray(start, end - 1);
      return {
        kind: 'answer',
        head: [
          'HTTP/1.1 206 Partial Content',
          'ETag: "v1"',
          `Content-Range: bytes ${start}-${end - 1}/${SIZE}`,
          `Content-Length: ${body.length}`,
        ],
        body,
      };
    });
    const err = await fetchExpectingError(server, 'length-lie.bin', { retryAttempts: 2 });
    assert.equal(err.code, 'LOOM_ERR_NETWORK', 'given up after the attempts');
    assert.equal((err.cause as LoomError).code, 'LOOM_ERR_BAD_RESPONSE');
    assert.match(err.message, /Content-Length \d+, not the \d+ bytes of its Content-Range/);
  });

  it('resumes each body cut short from the byte where it broke: no byte is fetched twice', async () => {
    const server = await origin((r) => (r.index > 1 ? { kind: 'cut', afterBytes: 100_000 } : undefined));
    const out = join(dir, 'cut.bin');
    const result = await fetchFile(server.url(), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(result.stats.retries >= 10, `${result.stats.retries} retries`);
    assert.equal(server.bodyBytes, SIZE);
  });

  it('never reuses a connection after Connection: close', async () => {
    const server = await origin((r) => (r.index > 1 ? { kind: 'close-after' } : undefined));
    const out = join(dir, 'close.bin');
    const result = await fetchFile(server.url(), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(result.stats.retries, 0);
    assert.ok(
      ranges(server).every((r) => r.onConnection === 1),
      'one request per connection',
    );
  });

  it('sends a request again on a fresh connection when a kept-alive one closes as it is reused', async () => {
    // Every raw connection is closed on its second request, unanswered: a keep-alive
    // timeout on the server racing the client's reuse.
    const server = await origin((r) => (r.index > 1 && r.onConnection === 2 ? { kind: 'drop' } : undefined));
    const out = join(dir, 'stale.bin');
    const result = await fetchFile(server.url(), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(
      ranges(server).some((r) => r.onConnection === 2),
      'a reuse was tried',
    );
    assert.equal(result.stats.retries, 0, 'the reuse failing costs no retry of the range');
  });

  it('keeps bytes past the end of a body out of the file', async () => {
    const server = await origin((r) => (r.index > 1 ? { kind: 'trailing', bytes: 'X'.repeat(5000) } : undefined));
    const out = join(dir, 'trailing.bin');
    await fetchFile(server.url(), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
  });

  it('skips a 103 Early Hints answer before the 206', async () => {
    const server = await origin((r) => (r.index > 1 ? { kind: 'informational' } : undefined));
    const out = join(dir, 'hints.bin');
    const result = await fetchFile(server.url(), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(result.stats.retries, 0);
  });

  it('reads a chunked 206 through node:http instead', async () => {
    const server = await origin((r) => (r.index > 1 ? { kind: 'chunked' } : undefined));
    const out = join(dir, 'chunked.bin');
    const result = await fetchFile(server.url(), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(result.stats.retries, 0);
  });
});
