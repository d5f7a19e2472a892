// The agent's HTTP server against a real node cache on a loopback port: exact bytes for whole
// blobs and ranges, verified pieces of downloads in progress and nothing else, the 4xx table,
// token auth, the upload limit, in-use protection from gc, and the metrics it counts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { blobPath, cacheLayout } from '../../src/cache/cache-root.js';
import { gcCache, openCache, removeFromCache } from '../../src/cache/cache-admin.js';
import { AgentServer, parseRange } from '../../src/peer/agent-server.js';
import { sha256Of, tempDir, waitFor } from '../helpers/fixtures.js';
import { errorOf, makeCache, putBlob, putPartial, rawRequest } from './peer-fixtures.js';

const servers: AgentServer[] = [];
after(async () => {
  for (const s of servers) await s.close(0);
});

async function start(
  root: string,
  options: { token?: string; maxUploads?: number; idleTimeoutMs?: number; readChunkBytes?: number } = {},
): Promise<{ server: AgentServer; base: string }> {
  const server = new AgentServer({ cacheRoot: root, ...options });
  const { port } = await server.listen('127.0.0.1', 0);
  servers.push(server);
  return { server, base: `http://127.0.0.1:${port}` };
}

async function get(url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(url, { method, headers });
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body };
}

function metricValue(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

/** A GET whose body the test does not read: the upload stays in flight until `destroy()`. */
function stalledGet(url: string): Promise<{ status: number; destroy(): void }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      res.pause();
      resolve({ status: res.statusCode!, destroy: () => req.destroy() });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNRESET') reject(err);
    });
  });
}

describe('agent server: complete blobs', () => {
  it('serves a whole blob and any single range with exact bytes and the contract headers', async () => {
    const root = await makeCache();
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const digest = await putBlob(root, bytes);
    const { base } = await start(root);

    const whole = await get(`${base}/v1/blobs/${digest}`);
    assert.equal(whole.status, 200);
    assert.equal(sha256Of(whole.body), digest);
    assert.equal(whole.headers.get('content-length'), String(bytes.length));
    assert.equal(whole.headers.get('accept-ranges'), 'bytes');
    assert.equal(whole.headers.get('etag'), `"${digest}"`);
    assert.equal(whole.headers.get('x-loom-complete'), '1');
    assert.equal(whole.headers.get('content-range'), null);

    const size = bytes.length;
    const cases: Array<[string, number, number]> = [
      ['bytes=0-0', 0, 0],
      ['bytes=1000-2000000', 1000, 2_000_000],
      [`bytes=${size - 10}-`, size - 10, size - 1],
      ['bytes=-4096', size - 4096, size - 1],
      [`bytes=5-${size + 100}`, 5, size - 1],
    ];
    for (const [range, start, end] of cases) {
      const part = await get(`${base}/v1/blobs/${digest}`, { range });
      assert.equal(part.status, 206, range);
      assert.equal(part.headers.get('content-range'), `bytes ${start}-${end}/${size}`, range);
      assert.equal(part.headers.get('content-length'), String(end - start + 1), range);
      assert.equal(sha256Of(part.body), sha256Of(bytes.subarray(start, end + 1)), range);
    }

    const head = await get(`${base}/v1/blobs/${digest}`, { range: 'bytes=10-19' }, 'HEAD');
    assert.equal(head.status, 206);
    assert.equal(head.headers.get('content-length'), '10');
    assert.equal(head.body.length, 0);
  });

  it('answers the 4xx table: bad digests and path-like ids 400, unknown 404, bad ranges 416', async () => {
    const root = await makeCache();
    const bytes = randomBytes(1000);
    const digest = await putBlob(root, bytes);
    // A file beside the cache that a path-like id would reach if paths were built from input;
    // put there once the cache exists (a folder holding it and no index is not a cache).
    writeFileSync(join(root, 'secret'), 'not for peers');
    const { base } = await start(root);

    for (const id of [
      digest.toUpperCase(),
      digest.slice(1),
      `${digest}0`,
      '..%2F..%2Fsecret',
      '..%2Fsecret',
      '%2e%2e%2fsecret',
      '../../secret',
      '../secret',
      `${digest}/../../secret`,
      `sha256:${digest}`,
      '',
    ]) {
      const answer = await rawRequest(base, `/v1/blobs/${id}`);
      assert.equal(answer.status, 400, id);
      assert.equal(errorOf(answer).code, 'LOOM_ERR_VALIDATION', id);
      assert.doesNotMatch(answer.body.toString(), /not for peers/);
    }

    const unknown = await rawRequest(base, `/v1/blobs/${'0'.repeat(64)}`);
    assert.equal(unknown.status, 404);
    assert.equal(errorOf(unknown).code, 'LOOM_ERR_NOT_FOUND');

    for (const range of [
      'bytes=abc',
      'bytes=5-2',
      'bytes=0-1,4-5',
      'bytes=1000-',
      'bytes=5000-6000',
      'bytes=-0',
      'bytes=-',
      'items=0-1',
      'bytes=99999999999999999999-',
    ]) {
      const answer = await rawRequest(base, `/v1/blobs/${digest}`, { headers: { range } });
      assert.equal(answer.status, 416, range);
      assert.equal(answer.headers['content-range'], `bytes */${bytes.length}`, range);
    }

    const post = await rawRequest(base, `/v1/blobs/${digest}`, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal((await rawRequest(base, '/etc/passwd')).status, 404);
  });

  it('parses one range against the size, and refuses what it cannot satisfy', () => {
    assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
    assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 });
    assert.deepEqual(parseRange('bytes=-200', 100), { start: 0, end: 99 });
    assert.equal(parseRange('bytes=0-0', 0), 'invalid');
    assert.equal(parseRange('bytes=-1', 0), 'invalid');
    assert.equal(parseRange('bytes=100-100', 100), 'invalid');
  });

  it('a blob removed from the cache is a 404, not an error', async () => {
    const root = await makeCache();
    const digest = await putBlob(root, randomBytes(5000));
    const { base } = await start(root);
    assert.equal((await get(`${base}/v1/blobs/${digest}`)).status, 200);
    const cache = await openCache(root);
    await removeFromCache(cache, digest);
    cache.close();
    const gone = await rawRequest(base, `/v1/blobs/${digest}`);
    assert.equal(gone.status, 404);
    assert.equal(errorOf(gone).code, 'LOOM_ERR_NOT_FOUND');
  });
});

describe('agent server: downloads in progress', () => {
  const PIECE = 64 * 1024;

  it('serves ranges within verified pieces exactly and refuses the rest at once with 404', async () => {
    const root = await makeCache();
    const bytes = randomBytes(PIECE * 5 + 1000); // 6 pieces, the last one short
    const partial = putPartial(root, bytes, PIECE, [0, 1, 3]);
    const { base } = await start(root);
    const url = `${base}/v1/blobs/${partial.digest}`;

    for (const [start, end] of [
      [0, PIECE * 2 - 1],
      [100, PIECE + 5],
      [PIECE * 3, PIECE * 4 - 1],
    ] as const) {
      const answer = await get(url, { range: `bytes=${start}-${end}` });
      assert.equal(answer.status, 206);
      assert.equal(answer.headers.get('x-loom-complete'), '0');
      assert.equal(answer.headers.get('content-range'), `bytes ${start}-${end}/${bytes.length}`);
      assert.equal(sha256Of(answer.body), sha256Of(bytes.subarray(start, end + 1)));
    }

    for (const headers of [
      { range: `bytes=${PIECE * 2}-${PIECE * 2}` }, // piece 2 not verified
      { range: `bytes=${PIECE * 2 - 1}-${PIECE * 2}` }, // straddles 1 (verified) and 2 (not)
      { range: `bytes=${PIECE * 5}-` }, // the last piece
      {}, // the whole blob
    ] as Array<Record<string, string>>) {
      const answer = await rawRequest(base, `/v1/blobs/${partial.digest}`, { headers });
      assert.equal(answer.status, 404, JSON.stringify(headers));
      assert.equal(errorOf(answer).code, 'LOOM_ERR_NOT_FOUND');
      assert.equal(errorOf(answer).message, 'pieces not yet here');
    }
    const outside = await rawRequest(base, `/v1/blobs/${partial.digest}`, {
      headers: { range: `bytes=${bytes.length}-` },
    });
    assert.equal(outside.status, 416);
    assert.equal(outside.headers['content-range'], `bytes */${bytes.length}`);

    // Pieces verify as the download goes: the next pieces file is read, not a stale copy.
    partial.setVerified([0, 1, 2, 3, 4, 5]);
    const whole = await get(url);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get('x-loom-complete'), '0');
    assert.equal(sha256Of(whole.body), partial.digest);
  });

  it('does not serve pieces listed as verified whose bytes are not in the .part file yet', async () => {
    const root = await makeCache();
    const bytes = randomBytes(PIECE * 4);
    const partial = putPartial(root, bytes, PIECE, [0, 1, 2, 3], PIECE * 2);
    const { base } = await start(root);
    const ok = await get(`${base}/v1/blobs/${partial.digest}`, { range: `bytes=0-${PIECE * 2 - 1}` });
    assert.equal(ok.status, 206);
    assert.equal(sha256Of(ok.body), sha256Of(bytes.subarray(0, PIECE * 2)));
    const short = await rawRequest(base, `/v1/blobs/${partial.digest}`, {
      headers: { range: `bytes=${PIECE * 2}-${PIECE * 3 - 1}` },
    });
    assert.equal(short.status, 404);
  });

  it('serves verified pieces of a download whose later piece digests are not known yet', async () => {
    const root = await makeCache();
    const { tmp } = cacheLayout(root);
    const bytes = randomBytes(PIECE * 3);
    const partial = putPartial(root, bytes, PIECE, [0]);
    // As a download without a manifest writes it: digests only for the hashed prefix.
    writeFileSync(
      join(tmp, `${partial.digest}.pieces.json`),
      JSON.stringify({
        digest: partial.digest,
        size: bytes.length,
        pieceSize: PIECE,
        pieces: [partial.pieces[0], '', ''],
        verified: [0],
      }),
    );
    const { base } = await start(root);
    const answer = await get(`${base}/v1/blobs/${partial.digest}`, { range: `bytes=0-${PIECE - 1}` });
    assert.equal(answer.status, 206);
    assert.equal(sha256Of(answer.body), partial.pieces[0]);
    const later = await rawRequest(base, `/v1/blobs/${partial.digest}`, { headers: { range: `bytes=${PIECE}-` } });
    assert.equal(later.status, 404);
  });

  it('treats a pieces file that does not describe its blob as no download at all', async () => {
    const root = await makeCache();
    const { tmp } = cacheLayout(root);
    const bytes = randomBytes(PIECE * 2);
    const partial = putPartial(root, bytes, PIECE, [0, 1]);
    const { base } = await start(root);
    const file = join(tmp, `${partial.digest}.pieces.json`);
    const bad = [
      '{ not json',
      JSON.stringify({
        digest: 'f'.repeat(64),
        size: bytes.length,
        pieceSize: PIECE,
        pieces: partial.pieces,
        verified: [0],
      }),
      JSON.stringify({ digest: partial.digest, size: bytes.length, pieceSize: PIECE, pieces: [], verified: [0] }),
      JSON.stringify({
        digest: partial.digest,
        size: bytes.length,
        pieceSize: PIECE,
        pieces: partial.pieces,
        verified: [7],
      }),
    ];
    for (const text of bad) {
      writeFileSync(file, text);
      const answer = await rawRequest(base, `/v1/blobs/${partial.digest}`, { headers: { range: 'bytes=0-9' } });
      assert.equal(answer.status, 404, text);
      assert.match(errorOf(answer).message, /is not here/);
    }
  });

  it('serves the blob once the download finished and moved it into the store', async () => {
    const root = await makeCache();
    const bytes = randomBytes(PIECE * 3);
    const partial = putPartial(root, bytes, PIECE, [0]);
    const { base } = await start(root);
    const url = `${base}/v1/blobs/${partial.digest}`;
    assert.equal((await get(url)).status, 404);
    const { tmp } = cacheLayout(root);
    rmSync(join(tmp, `${partial.digest}.pieces.json`));
    rmSync(join(tmp, `${partial.digest}.part`));
    await putBlob(root, bytes);
    const done = await get(url);
    assert.equal(done.status, 200);
    assert.equal(done.headers.get('x-loom-complete'), '1');
    assert.equal(sha256Of(done.body), partial.digest);
  });
});

describe('agent server: limits, auth, in-use and metrics', () => {
  it('with a token, refuses blob requests without it (401) and serves them with it', async () => {
    const root = await makeCache();
    const digest = await putBlob(root, randomBytes(2048));
    const token = 'k'.repeat(40);
    const { base } = await start(root, { token });
    const none = await rawRequest(base, `/v1/blobs/${digest}`);
    assert.equal(none.status, 401);
    assert.equal(errorOf(none).code, 'LOOM_ERR_UNAUTHORIZED');
    const wrong = await rawRequest(base, `/v1/blobs/${digest}`, {
      headers: { authorization: `Bearer ${'x'.repeat(40)}` },
    });
    assert.equal(wrong.status, 401);
    const basic = await rawRequest(base, `/v1/blobs/${digest}`, { headers: { authorization: token } });
    assert.equal(basic.status, 401);
    const right = await get(`${base}/v1/blobs/${digest}`, { authorization: `Bearer ${token}` });
    assert.equal(right.status, 200);
    assert.equal(sha256Of(right.body), digest);
    assert.equal((await get(`${base}/healthz`)).status, 200, 'health is open');
  });

  it('answers 503 with Retry-After above --max-uploads, and takes uploads again when one ends', async () => {
    const root = await makeCache();
    const digest = await putBlob(root, randomBytes(48 * 1024 * 1024));
    const small = await putBlob(root, randomBytes(100));
    const { server, base } = await start(root, { maxUploads: 1 });
    const first = await stalledGet(`${base}/v1/blobs/${digest}`);
    assert.equal(first.status, 200);
    assert.equal(server.uploadsInFlight, 1);
    const refused = await rawRequest(base, `/v1/blobs/${small}`);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    const head = await rawRequest(base, `/v1/blobs/${small}`, { method: 'HEAD' });
    assert.equal(head.status, 200, 'a HEAD is not an upload');
    first.destroy();
    await waitFor('upload ended', () => server.uploadsInFlight === 0);
    const again = await get(`${base}/v1/blobs/${small}`);
    assert.equal(again.status, 200);
    assert.equal(sha256Of(again.body), small);
  });

  it('sends concurrent ranges exact through its reused read buffers, and again after a reader went away mid-body', async () => {
    const root = await makeCache();
    const bytes = randomBytes(6 * 1024 * 1024 + 333);
    const digest = await putBlob(root, bytes);
    // An odd chunk size: every body is many reads, none aligned with the range.
    const { server, base } = await start(root, { readChunkBytes: 65_537 });
    const ranges = Array.from({ length: 8 }, (_, i) => [i * 700_001, i * 700_001 + 1_500_000] as const);
    const serveAll = () =>
      Promise.all(
        ranges.map(async ([start, end]) => {
          const part = await get(`${base}/v1/blobs/${digest}`, { range: `bytes=${start}-${end}` });
          assert.equal(part.status, 206);
          assert.equal(sha256Of(part.body), sha256Of(bytes.subarray(start, end + 1)), `${start}-${end}`);
        }),
      );
    // A reader that holds off at first: the socket's buffers fill and writes wait in the
    // agent; a buffer read into again before its write went out would corrupt the body.
    const late = await new Promise<Buffer>((resolve, reject) => {
      http.get(`${base}/v1/blobs/${digest}`, { agent: false }, (res) => {
        res.pause();
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve(Buffer.concat(chunks)));
        res.on('error', reject);
        setTimeout(() => res.resume(), 300);
      });
    });
    assert.equal(sha256Of(late), digest);
    await serveAll();
    const gone = await stalledGet(`${base}/v1/blobs/${digest}`);
    assert.equal(gone.status, 200);
    gone.destroy();
    await waitFor('upload ended', () => server.uploadsInFlight === 0);
    await serveAll();
    const whole = await get(`${base}/v1/blobs/${digest}`);
    assert.equal(sha256Of(whole.body), digest);
  });

  it('cuts a peer that stops reading after the idle timeout, freeing its upload slot', async () => {
    const root = await makeCache();
    const digest = await putBlob(root, randomBytes(48 * 1024 * 1024));
    // Long enough that a loaded machine still sees the upload in flight before it is cut.
    const { server, base } = await start(root, { maxUploads: 1, idleTimeoutMs: 2_000 });
    const stalled = await stalledGet(`${base}/v1/blobs/${digest}`);
    assert.equal(stalled.status, 200);
    assert.equal(server.uploadsInFlight, 1);
    await waitFor('stalled upload cut', () => server.uploadsInFlight === 0);
    const next = await get(`${base}/v1/blobs/${digest}`, { range: 'bytes=0-99' });
    assert.equal(next.status, 206);
    stalled.destroy();
  });

  it('marks a blob in use while it is served: gc and rm leave it, and they work once it is done', async () => {
    const root = await makeCache();
    const bytes = randomBytes(48 * 1024 * 1024);
    const digest = await putBlob(root, bytes);
    const { server, base } = await start(root);
    const reader = await stalledGet(`${base}/v1/blobs/${digest}`);
    assert.equal(reader.status, 200);
    const cache = await openCache(root);
    after(() => cache.close());
    const gc = await gcCache(cache, 0);
    assert.deepEqual(gc.skippedInUse, [digest]);
    await assert.rejects(removeFromCache(cache, digest), { code: 'LOOM_ERR_CACHE' });
    reader.destroy();
    await waitFor('upload ended', () => server.uploadsInFlight === 0);
    const later = await gcCache(cache, 0);
    assert.deepEqual(
      later.evicted.map((b) => b.digest),
      [digest],
    );
    assert.equal((await rawRequest(base, `/v1/blobs/${digest}`)).status, 404);
  });

  it('counts body bytes served, uploads in flight and refusals by reason in /metrics', async () => {
    const root = await makeCache();
    const bytes = randomBytes(100_000);
    const digest = await putBlob(root, bytes);
    const partial = putPartial(root, randomBytes(2 * 4096), 4096, [0]);
    const { base } = await start(root, { token: 't'.repeat(20) });
    const auth = { authorization: `Bearer ${'t'.repeat(20)}` };
    await get(`${base}/v1/blobs/${digest}`, auth); // 100,000
    await get(`${base}/v1/blobs/${digest}`, { ...auth, range: 'bytes=0-999' }); // 1,000
    await get(`${base}/v1/blobs/${partial.digest}`, { ...auth, range: 'bytes=0-4095' }); // 4,096
    await get(`${base}/v1/blobs/${digest}`, auth, 'HEAD'); // no body
    await rawRequest(base, `/v1/blobs/${digest}`); // unauthorized
    await rawRequest(base, `/v1/blobs/../x`, { headers: auth }); // bad_request
    await rawRequest(base, `/v1/blobs/${'1'.repeat(64)}`, { headers: auth }); // not_found
    await rawRequest(base, `/v1/blobs/${partial.digest}`, { headers: { ...auth, range: 'bytes=4096-' } }); // pieces_missing
    await rawRequest(base, `/v1/blobs/${digest}`, { headers: { ...auth, range: 'bytes=9-1' } }); // range
    await rawRequest(base, `/v1/blobs/${digest}`, { headers: { ...auth, range: 'bytes=1-2,5-6' } }); // range

    // A response reaches the client before the server's bookkeeping after it has run, so the
    // gauge is read until it settles; a count that never returns to 0 still fails here.
    const text = await waitFor('uploads in flight back to 0', async () => {
      const metrics = await get(`${base}/metrics`);
      assert.equal(metrics.status, 200, 'metrics are open');
      const body = metrics.body.toString();
      return metricValue(body, 'loom_agent_uploads_in_flight') === 0 && body;
    });
    assert.equal(metricValue(text, 'loom_agent_bytes_served_total'), 105_096);
    for (const [reason, count] of [
      ['unauthorized', 1],
      ['bad_request', 1],
      ['not_found', 1],
      ['pieces_missing', 1],
      ['range', 2],
      ['busy', 0],
    ] as const) {
      assert.equal(metricValue(text, 'loom_agent_refusals_total', `{reason="${reason}"}`), count, reason);
    }
  });

  it('never reads outside the cache: the digest is the only name a request can give', async () => {
    const outside = tempDir();
    const bytes = randomBytes(4096);
    const digest = sha256Of(bytes);
    writeFileSync(join(outside, digest), bytes);
    const root = await makeCache();
    const { base } = await start(root);
    assert.equal((await rawRequest(base, `/v1/blobs/${digest}`)).status, 404);
    assert.equal((await rawRequest(base, `/v1/blobs/${encodeURIComponent(join(outside, digest))}`)).status, 400);
  });
});

describe('agent server: a download finishing while it is asked', () => {
  // The downloader moves the .part under its digest, then removes the pieces file. A request
  // that looked for the complete blob just before the move and for the pieces file just after
  // the removal answered 404 for a blob it holds whole: a peer listed with every piece was
  // dropped for it (the demo's three fresh nodes: "dropped: node-c (LOOM_ERR_HTTP_STATUS)").
  it('never answers 404 for a range of a blob whose every piece is verified, as the blob is adopted', async () => {
    const root = await makeCache();
    const { base } = await start(root);
    const layout = cacheLayout(root);
    const piece = 16 * 1024;
    const refused: string[] = [];
    for (let round = 0; round < 150 && refused.length === 0; round++) {
      const bytes = randomBytes(piece * 4);
      const partial = putPartial(root, bytes, piece, [0, 1, 2, 3]);
      const url = `${base}/v1/blobs/${partial.digest}`;
      const asked = Array.from({ length: 12 }, (_, i) =>
        get(url, { range: `bytes=${(i % 4) * piece}-${(i % 4) * piece + 999}` }),
      );
      // The finishing download: adoptBlob, then the pieces record removed (planned-download.ts).
      await new Promise((resolve) => setTimeout(resolve, round % 3));
      renameSync(join(layout.tmp, `${partial.digest}.part`), blobPath(layout, partial.digest));
      rmSync(join(layout.tmp, `${partial.digest}.pieces.json`));
      for (const [i, answer] of (await Promise.all(asked)).entries()) {
        if (answer.status !== 206) refused.push(`round ${round}: HTTP ${answer.status} ${answer.body.toString()}`);
        else assert.deepEqual(answer.body, bytes.subarray((i % 4) * piece, (i % 4) * piece + 1000));
      }
    }
    assert.deepEqual(refused, []);
  });
});
