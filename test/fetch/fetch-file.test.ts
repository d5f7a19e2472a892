// fetchFile against a real origin on loopback, one injected fault at a time. Each test
// asserts the output's sha256 equals the source's, or that the documented error comes
// and nothing is left at the output path.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer, type Fault, type FaultContext, type OriginOptions } from '../support/origin-server.js';
import { makeTestCa } from '../support/test-ca.js';
import {
  AbortedError,
  DigestMismatchError,
  HttpStatusError,
  LoomError,
  NetworkError,
  SourceChangedError,
  UsageError,
  fetchFile,
  type FetchOptions,
  type FetchProgress,
} from '../../src/index.js';
import { fetchFileChecked } from '../../src/fetch/fetch-file.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const SIZE = 4 * 1024 * 1024 + 12345;
const CHUNK = 256 * 1024;
/** Small chunks, fast retries: many requests, so every fault path is hit quickly. */
const FAST: FetchOptions = {
  workers: 8,
  chunkSize: CHUNK,
  maxRequestSize: CHUNK,
  retryBaseDelay: 5,
  retryMaxDelay: 50,
};

const servers: OriginServer[] = [];
async function origin(options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  servers.push(server);
  return server;
}
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

/** Fault on the requests whose 1-based index is in `indexes` (the probe is request 1). */
function on(indexes: number[], fault: Fault): (ctx: FaultContext) => Fault | undefined {
  return (ctx) => (indexes.includes(ctx.index) ? fault : undefined);
}

const dir = tempDir();
const content = randomContent(SIZE);

/** Starts a download, cancels it after `afterMs`, and checks it ended with AbortedError. */
async function interruptedFetch(url: string, out: string, afterMs: number, options: FetchOptions = {}): Promise<void> {
  const controller = new AbortController();
  setTimeout(() => controller.abort(), afterMs);
  await assert.rejects(
    fetchFile(url, out, { ...FAST, workers: 2, journalInterval: 50, ...options, signal: controller.signal }),
    AbortedError,
  );
}

async function fetchOk(server: OriginServer, name: string, options: FetchOptions = {}) {
  server.setFile(`/${name}`, content.bytes);
  const out = join(dir, name);
  const result = await fetchFile(server.url(`/${name}`), out, { ...FAST, ...options });
  assert.equal(await sha256OfFile(out), content.sha256);
  assert.equal(result.size, SIZE);
  assert.equal(existsSync(`${out}.part`), false, 'no part file left');
  assert.equal(existsSync(`${out}.part.journal`), false, 'no journal left');
  return result;
}

describe('fetchFile', () => {
  it('downloads a file in parallel ranges and renames it into place', async () => {
    const server = await origin();
    const progress: FetchProgress[] = [];
    const result = await fetchOk(server, 'plain.bin', { sha256: content.sha256, onProgress: (p) => progress.push(p) });
    assert.ok(progress.length >= 1, 'progress was reported');
    assert.deepEqual(
      { done: progress.at(-1)!.doneBytes, total: progress.at(-1)!.totalBytes },
      { done: SIZE, total: SIZE },
      'the last progress event is the finished file',
    );
    assert.equal(result.sha256, content.sha256);
    assert.equal(server.bytesServed, SIZE, 'every byte served exactly once');
    assert.ok(server.requests.length >= SIZE / CHUNK, 'one request per chunk');
    assert.ok(
      server.requests.every((r) => r.range?.startsWith('bytes=')),
      'every request is ranged',
    );
    assert.equal(server.requests[0]!.headers['if-range'], undefined, 'the probe asks for any version');
    const etag = server.currentEtag('/plain.bin');
    assert.ok(etag);
    assert.ok(
      server.requests.slice(1).every((r) => r.headers['if-range'] === etag),
      'every chunk request carries If-Range with the probed ETag',
    );
  });

  it('uses one request per chunk when no request size is set', async () => {
    const server = await origin();
    await fetchOk(server, 'coalesced.bin', { maxRequestSize: undefined, chunkSize: '1MiB', workers: 4 });
    // probe + four chunks (+ splits at the tail)
    assert.ok(server.requests.length <= 12, `made ${server.requests.length} requests`);
    assert.equal(server.bytesServed, SIZE);
  });

  it('resumes a chunk from the byte where the connection was reset', async () => {
    const server = await origin({ fault: on([2, 3, 5], { kind: 'reset', afterBytes: 100_000 }) });
    const result = await fetchOk(server, 'reset.bin');
    assert.ok(result.stats.retries >= 3);
    const resumed = server.requests.filter((r) => {
      const start = Number(/bytes=(\d+)-/.exec(r.range ?? '')?.[1]);
      return start % CHUNK !== 0;
    });
    assert.ok(resumed.length >= 1, 'a retry asked for the rest of a chunk, not the whole chunk');
    assert.ok(server.bytesServed < SIZE + 3 * CHUNK);
  });

  it('retries through a burst of 500 and 503 answers', async () => {
    const server = await origin({
      fault: (ctx) =>
        ctx.index >= 2 && ctx.index <= 9 ? { kind: 'status', status: ctx.index % 2 ? 500 : 503 } : undefined,
    });
    const result = await fetchOk(server, 'burst.bin');
    assert.ok(result.stats.retries >= 8);
  });

  it('waits as long as Retry-After says after a 429', async () => {
    const server = await origin({
      fault: on([2], { kind: 'status', status: 429, headers: { 'retry-after': '1' } }),
    });
    await fetchOk(server, 'throttled.bin', { workers: 1 });
    const [, limited, next] = server.requests;
    assert.equal(limited!.status, 429);
    assert.ok(next!.at - limited!.at >= 950, `retried after ${Math.round(next!.at - limited!.at)} ms`);
  });

  it('fails at once when Retry-After asks for longer than the maximum', async () => {
    const server = await origin({
      fault: on([2], { kind: 'status', status: 503, headers: { 'retry-after': '3600' } }),
    });
    server.setFile('/later.bin', content.bytes);
    const out = join(dir, 'later.bin');
    await assert.rejects(fetchFile(server.url('/later.bin'), out, { ...FAST, workers: 1 }), NetworkError);
    assert.equal(existsSync(out), false);
  });

  it('aborts and retries a stalled body', async () => {
    const server = await origin({ fault: on([3], { kind: 'stall', afterBytes: 64 * 1024 }) });
    const result = await fetchOk(server, 'stall.bin', { stallTimeout: 300 });
    assert.ok(result.stats.retries >= 1);
  });

  it('downloads as one stream when the server ignores Range', async () => {
    const server = await origin({ acceptRanges: false });
    const result = await fetchOk(server, 'norange.bin', { sha256: content.sha256 });
    assert.equal(server.requests.length, 1, 'the probe response is the download');
    assert.equal(result.stats.requests, 1);
  });

  it('retries a chunk whose Content-Range is wrong', async () => {
    const server = await origin({ fault: on([2, 4], { kind: 'content-range', value: 'bytes 0-99/100' }) });
    const result = await fetchOk(server, 'wrong-cr.bin');
    assert.ok(result.stats.retries >= 2);
  });

  it('retries a chunk whose Content-Range is missing', async () => {
    const server = await origin({ fault: on([3], { kind: 'content-range', value: null }) });
    const result = await fetchOk(server, 'missing-cr.bin');
    assert.ok(result.stats.retries >= 1);
  });

  it('retries the rest of a short body', async () => {
    const server = await origin({ fault: on([2, 3], { kind: 'short-body', bytes: 1000 }) });
    const result = await fetchOk(server, 'short.bin');
    assert.ok(result.stats.retries >= 2);
  });

  it('fails after the attempts run out, keeping the partial file for a resume', async () => {
    const server = await origin({ fault: (ctx) => (ctx.index > 3 ? { kind: 'status', status: 502 } : undefined) });
    server.setFile('/down.bin', content.bytes);
    const out = join(dir, 'down.bin');
    await assert.rejects(
      fetchFile(server.url('/down.bin'), out, { ...FAST, retryAttempts: 3 }),
      (err: unknown) => err instanceof HttpStatusError && err.status === 502,
    );
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.part`), true);
    assert.equal(existsSync(`${out}.part.journal`), true);
  });

  it('starts over once when the ETag changes mid-download, never mixing versions', async () => {
    const next = randomContent(SIZE);
    const server: OriginServer = await origin({
      fault: (ctx) => {
        if (ctx.index === 4) server.setFile('/moving.bin', next.bytes);
        return undefined;
      },
    });
    server.setFile('/moving.bin', content.bytes);
    const out = join(dir, 'moving.bin');
    const result = await fetchFile(server.url('/moving.bin'), out, FAST);
    assert.equal(result.stats.restarts, 1);
    assert.equal(await sha256OfFile(out), next.sha256);
  });

  it('fails with SOURCE_CHANGED when the file keeps changing and restarts are off', async () => {
    const server: OriginServer = await origin({
      fault: (ctx) => {
        if (ctx.index === 3) server.setFile('/moving2.bin', randomContent(SIZE).bytes);
        return undefined;
      },
    });
    server.setFile('/moving2.bin', content.bytes);
    const out = join(dir, 'moving2.bin');
    await assert.rejects(
      fetchFile(server.url('/moving2.bin'), out, { ...FAST, restartOnChange: false }),
      SourceChangedError,
    );
    assert.equal(existsSync(out), false);
  });

  it('follows a redirect to another host without forwarding Authorization', async () => {
    const cdn = await origin({ hostname: 'localhost' });
    cdn.setFile('/signed/weights.bin', content.bytes);
    const hub = await origin();
    hub.redirect('/weights.bin', cdn.url('/signed/weights.bin?sig=abc'));
    const out = join(dir, 'redirected.bin');
    const result = await fetchFile(hub.url('/weights.bin'), out, {
      ...FAST,
      headers: { Authorization: 'Bearer secret' },
    });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(hub.requests[0]!.headers.authorization, 'Bearer secret');
    assert.ok(cdn.requests.length > 1, 'chunk requests went to the final URL');
    assert.ok(
      cdn.requests.every((r) => r.headers.authorization === undefined),
      'no credentials sent to the CDN',
    );
    assert.equal(hub.requests.length, 1, 'chunks did not go back through the redirect');
    assert.equal(result.finalUrl, cdn.url('/signed/weights.bin?sig=abc'));
  });

  it('gives up after 10 redirects with LOOM_ERR_REDIRECT and writes nothing', async () => {
    const server = await origin();
    server.redirect('/loop-a', server.url('/loop-b'));
    server.redirect('/loop-b', server.url('/loop-a'));
    const out = join(dir, 'loop.bin');
    await assert.rejects(fetchFile(server.url('/loop-a'), out, FAST), (err: unknown) => {
      assert.ok(err instanceof LoomError);
      assert.equal(err.code, 'LOOM_ERR_REDIRECT');
      assert.match(err.message, /more than 10 redirects/);
      return true;
    });
    assert.equal(server.requests.length, 11, 'the first request and 10 redirects followed');
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.part`), false);
  });

  it('asks the origin for a fresh URL when a signed redirect target expires', async () => {
    let expired = false;
    const cdn = await origin({
      hostname: 'localhost',
      fault: (ctx) => {
        if (ctx.index === 3) expired = true;
        return expired && ctx.path === '/old' ? { kind: 'status', status: 403 } : undefined;
      },
    });
    cdn.setFile('/old', content.bytes);
    cdn.setFile('/new', content.bytes);
    const hub = await origin({
      fault: () => ({ kind: 'redirect', location: cdn.url(expired ? '/new' : '/old') }),
    });
    const out = join(dir, 'refreshed.bin');
    await fetchFile(hub.url('/model.bin'), out, { ...FAST, workers: 2 });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(hub.requests.length >= 2, 'went back to the origin for a new URL');
  });

  it('fails with both digests and keeps nothing on a sha256 mismatch', async () => {
    const server = await origin();
    server.setFile('/mismatch.bin', content.bytes);
    const out = join(dir, 'mismatch.bin');
    const wrong = 'ab'.repeat(32);
    await assert.rejects(fetchFile(server.url('/mismatch.bin'), out, { ...FAST, sha256: wrong }), (err: unknown) => {
      assert.ok(err instanceof DigestMismatchError);
      assert.equal(err.expected, wrong);
      assert.equal(err.actual, content.sha256);
      assert.match(err.message, new RegExp(content.sha256));
      return true;
    });
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.part`), false);
  });

  it('fails at once on a 404 with the status and URL in the message', async () => {
    const server = await origin();
    const out = join(dir, 'missing.bin');
    await assert.rejects(fetchFile(server.url('/missing.bin'), out, FAST), (err: unknown) => {
      assert.ok(err instanceof HttpStatusError);
      assert.equal(err.status, 404);
      assert.match(err.message, /404/);
      assert.match(err.message, /missing\.bin/);
      return true;
    });
    assert.equal(server.requests.length, 1, 'no retry of a 404');
    assert.equal(existsSync(out), false);
  });

  it('splits the slowest range so idle workers help at the tail', async () => {
    const server = await origin({ fault: on([2], { kind: 'slow', bytesPerSecond: 1024 * 1024 }) });
    const result = await fetchOk(server, 'tail.bin', { workers: 2, chunkSize: '2MiB', maxRequestSize: undefined });
    assert.ok(result.stats.splits >= 1, 'the slow range was split');
    assert.ok(result.seconds < 2, `took ${result.seconds.toFixed(2)} s; unsplit it would take over 1 s per MiB`);
  });

  it('stops on abort, keeps the journal, and a second run fetches only the rest', async () => {
    // Slow enough that the abort always lands mid-download: with early opens two workers hold
    // up to four connections, and at 2 MiB/s each an idle machine finished before the abort.
    const server = await origin({ rateLimitBytesPerSecond: 512 * 1024 });
    server.setFile('/abort.bin', content.bytes);
    const out = join(dir, 'abort.bin');
    await interruptedFetch(server.url('/abort.bin'), out, 700);
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.part.journal`), true);
    const firstRun = server.bytesServed;
    server.resetStats();
    const result = await fetchFile(server.url('/abort.bin'), out, { ...FAST, workers: 8 });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(result.stats.resumedBytes > 0, 'resumed');
    assert.ok(server.bytesServed < SIZE, `second run served ${server.bytesServed} of ${SIZE}`);
    assert.ok(firstRun + server.bytesServed >= SIZE);
  });

  it('discards the journal when the validator changed between runs', async () => {
    const server = await origin({ rateLimitBytesPerSecond: 512 * 1024 });
    server.setFile('/changed.bin', content.bytes);
    const out = join(dir, 'changed.bin');
    await interruptedFetch(server.url('/changed.bin'), out, 500);
    const next = randomContent(SIZE);
    server.setFile('/changed.bin', next.bytes);
    const result = await fetchFile(server.url('/changed.bin'), out, { ...FAST, workers: 8 });
    assert.equal(result.stats.resumedBytes, 0);
    assert.equal(await sha256OfFile(out), next.sha256);
  });

  it('fetches over HTTPS with a private CA given as a CA file, and refuses without it', async () => {
    const ca = makeTestCa();
    const server = await origin({ tls: { key: ca.serverKey, cert: ca.serverCert } });
    await fetchOk(server, 'tls.bin', { caCertFiles: [ca.caCertFile] });
    server.setFile('/tls2.bin', content.bytes);
    const out = join(dir, 'tls2.bin');
    await assert.rejects(fetchFile(server.url('/tls2.bin'), out, { ...FAST, retryAttempts: 1 }), /certificate/i);
    assert.equal(existsSync(out), false);
  });

  it('rejects bad options before any request', async () => {
    await assert.rejects(fetchFile('http://127.0.0.1:1/x', join(dir, 'x'), { workers: 0 }), UsageError);
    await assert.rejects(fetchFile('http://127.0.0.1:1/x', join(dir, 'x'), { chunkSize: 'lots' }), UsageError);
    await assert.rejects(
      fetchFile('http://127.0.0.1:1/x', join(dir, 'x'), { bogus: true } as unknown as FetchOptions),
      UsageError,
    );
    await assert.rejects(fetchFile('not a url', join(dir, 'x')), /not a valid URL/);
    const left = await readdir(dir);
    assert.ok(!left.includes('x'));
  });
});

describe('fetchFile with a leftover journal', () => {
  it('ignores a journal left by another URL at the same output path', async () => {
    const server = await origin();
    const big = randomContent(SIZE);
    const small = randomContent(300 * 1024);
    server.setFile('/big.bin', big.bytes);
    server.setFile('/small.bin', small.bytes);
    const out = join(dir, 'reused.bin');
    const slow = await origin({ rateLimitBytesPerSecond: 1024 * 1024 });
    slow.setFile('/big.bin', big.bytes);
    await interruptedFetch(slow.url('/big.bin'), out, 600);
    assert.equal(existsSync(`${out}.part.journal`), true);
    await fetchFile(server.url('/small.bin'), out, FAST);
    assert.equal(await sha256OfFile(out), small.sha256);
  });

  it('starts over when the file shrank below where the journal left off', async () => {
    const slow = await origin({ rateLimitBytesPerSecond: 1024 * 1024 });
    const big = randomContent(SIZE);
    slow.setFile('/shrinks.bin', big.bytes);
    const out = join(dir, 'shrinks.bin');
    await interruptedFetch(slow.url('/shrinks.bin'), out, 1200, { workers: 1 });
    const small = randomContent(200 * 1024);
    slow.setFile('/shrinks.bin', small.bytes);
    const result = await fetchFile(slow.url('/shrinks.bin'), out, FAST);
    assert.equal(result.stats.resumedBytes, 0);
    assert.equal(await sha256OfFile(out), small.sha256);
  });
});

describe('fetchFileChecked', () => {
  it('places the file only after the check passed, under the output name', async () => {
    const server = await origin();
    server.setFile('/checked.bin', content.bytes);
    const out = join(dir, 'checked.bin');
    const seen: string[] = [];
    const result = await fetchFileChecked(server.url('/checked.bin'), out, FAST, async (path) => {
      assert.equal(existsSync(out), false, 'nothing at the output while the check runs');
      seen.push(await sha256OfFile(path));
    });
    assert.deepEqual(seen, [content.sha256], 'the check saw the finished file');
    assert.equal(result.path, out);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(existsSync(`${out}.loom-unverified`), false);
  });

  it('leaves nothing at the output nor beside it when the check refuses the bytes', async () => {
    const server = await origin();
    server.setFile('/refused.bin', content.bytes);
    const out = join(dir, 'refused.bin');
    const refusal = new DigestMismatchError('refused by the test', {
      expected: '0'.repeat(40),
      actual: '1'.repeat(40),
    });
    await assert.rejects(
      fetchFileChecked(server.url('/refused.bin'), out, FAST, () => Promise.reject(refusal)),
      (err: unknown) => err === refusal,
    );
    const left = (await readdir(dir)).filter((name) => name.startsWith('refused.bin'));
    assert.deepEqual(left, []);
  });
});
