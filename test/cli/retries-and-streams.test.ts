// What a download says while it is not simply moving: retries and their waits as they happen
// (on a real pseudo-terminal and in plain lines), a server that ignores Range (said once, and
// Ctrl-C then promises no resume), and `-o -` streaming the file to stdout in order.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { formatRetryWait, renderBar } from '../../src/cli/progress.js';
import { formatBytes } from '../../src/core/units.js';
import { LOOM_BIN, randomContent, runLoom, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import { frames, loomOnTerminal, screen } from './terminal.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

const dir = tempDir();
const SIZE = 6 * 1024 * 1024;
const content = randomContent(SIZE);
const servers: OriginServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function origin(options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  server.setFile('/model.bin', content.bytes);
  servers.push(server);
  return server;
}

/** An origin whose 2nd and 3rd requests (the first ranges after the probe) get 503, Retry-After: 1. */
function busyOrigin(): Promise<OriginServer> {
  return origin({
    rateLimitBytesPerSecond: 2 * 1024 * 1024,
    fault: (ctx) =>
      ctx.index === 2 || ctx.index === 3
        ? { kind: 'status', status: 503, headers: { 'retry-after': '1' }, body: 'busy' }
        : undefined,
  });
}

const RETRYING = /retrying [123] ranges?: 503, next in (\d+ s|\d+ ms)/;

describe('retries as they happen', () => {
  it('the bar shows "retrying N ranges: 503, next in …" while ranges wait, on a terminal', async () => {
    const server = await busyOrigin();
    const out = join(dir, 'bar.bin');
    const args = ['fetch', server.url('/model.bin'), '-o', out, '--no-cache', '-w', '2', '--chunk-size', '1MiB'];
    const { code, raw } = await loomOnTerminal(args, 100).done;
    assert.equal(code, 0, raw);
    assert.equal(await sha256OfFile(out), content.sha256);
    const drawn = frames(raw);
    assert.ok(
      drawn.some((f) => RETRYING.test(f)),
      `no frame shows the wait:\n${drawn.join('\n')}`,
    );
    for (const frame of drawn) assert.ok(frame.length < 100, frame);
    const seen = screen(raw);
    assert.equal(seen.length, 1, seen.join('\n'));
    assert.match(seen[0]!, /from the origin \(\d+ requests, 2 retries\)/);
  });

  it('plain lines say the wait when it starts, without a terminal', async () => {
    const server = await busyOrigin();
    const out = join(dir, 'lines.bin');
    const run = await runLoom(['fetch', server.url('/model.bin'), '-o', out, '--no-cache', '-w', '2']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /^loom: lines\.bin: retrying [12] ranges?: 503, next in (\d+ s|\d+ ms)$/m);
    assert.equal(await sha256OfFile(out), content.sha256);
  });

  it('reads right for one range and for several; keeps the wait over the connection count', () => {
    assert.equal(formatRetryWait({ ranges: 1, reason: '503', nextInMs: 2000 }), 'retrying 1 range: 503, next in 2 s');
    assert.equal(
      formatRetryWait({ ranges: 3, reason: 'ECONNRESET', nextInMs: 420 }),
      'retrying 3 ranges: ECONNRESET, next in 400 ms',
    );
    const line = renderBar(
      {
        label: 'model.bin',
        doneBytes: 1_000_000,
        totalBytes: 6_000_000,
        rate: 2_000_000,
        activeRequests: 1,
        retries: 3,
        retrying: { ranges: 2, reason: '503', nextInMs: 1000 },
      },
      79,
    );
    assert.match(line, /retrying 2 ranges: 503, next in 1 s$/);
    assert.ok(line.length <= 79, line);
  });
});

describe('a server without Range support', () => {
  it('is said once; Ctrl-C then keeps nothing and promises no resume', async () => {
    const server = await origin({ acceptRanges: false, rateLimitBytesPerSecond: 1024 * 1024 });
    const out = join(dir, 'norange.bin');
    const run = loomOnTerminal(['fetch', server.url('/model.bin'), '-o', out, '--no-cache'], 80);
    await waitFor('a frame with a rate', () => frames(run.output()).some((f) => /B\/s/.test(f)), 20_000);
    run.child.stdin!.write('\x03');
    const { code, raw } = await run.done;
    assert.equal(code, 130, raw);
    assert.deepEqual(
      screen(raw),
      [
        'loom: this server does not support ranges: one stream, no resume',
        'loom: SIGINT: stopping',
        'loom: error: download cancelled; the server does not support ranges, so nothing was kept: a rerun starts over',
      ],
      raw,
    );
    assert.equal(existsSync(`${out}.part`), false, 'no partial file to resume from');
    assert.equal(existsSync(`${out}.part.journal`), false);
  });

  it('promises no resume when it gives up midway: the bytes were not kept', async () => {
    const server = await origin({ acceptRanges: false, fault: () => ({ kind: 'reset', afterBytes: 100_000 }) });
    const out = join(dir, 'norange-cut.bin');
    const run = await runLoom([
      'fetch',
      server.url('/model.bin'),
      '-o',
      out,
      '--no-cache',
      '--retries',
      '2',
      '--retry-base-delay',
      '10ms',
    ]);
    assert.equal(run.code, 3, run.stderr);
    assert.doesNotMatch(run.stderr, /kept and resumed/);
    assert.match(
      run.stderr,
      /then rerun: the server does not support ranges, so nothing was kept: a rerun starts over\n/,
    );
    assert.equal(existsSync(`${out}.part`), false);
  });

  it('says so once in plain lines, and the download completes', async () => {
    const server = await origin({ acceptRanges: false });
    const out = join(dir, 'norange-lines.bin');
    const run = await runLoom(['fetch', server.url('/model.bin'), '-o', out, '--no-cache']);
    assert.equal(run.code, 0, run.stderr);
    const notices = run.stderr.split('\n').filter((l) => l.includes('does not support ranges'));
    assert.deepEqual(notices, ['loom: this server does not support ranges: one stream, no resume']);
    assert.equal(await sha256OfFile(out), content.sha256);
  });
});

/** `loom ARGS | sha256sum`, in node: the exit code, the stderr and the digest of what came out. */
function loomToPipe(args: string[], stopAfter?: number) {
  const child = spawn(process.execPath, [LOOM_BIN, ...args], {
    env: { ...process.env, LOOM_CACHE_DIR: join(dir, 'cache') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const hash = createHash('sha256');
  let bytes = 0;
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    bytes += d.length;
    hash.update(d);
    // A reader that has had enough closes its end, as `head -c` does.
    if (stopAfter !== undefined && bytes >= stopAfter) child.stdout.destroy();
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise<{ code: number | null; stderr: string; bytes: number; sha256: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stderr, bytes, sha256: hash.digest('hex') })),
  );
}

const leftovers = (): string[] => readdirSync(tmpdir()).filter((name) => name.startsWith('loom-stdout-'));

describe('-o - streams the file to stdout', () => {
  it('in order, verified against --sha256, with the summary on stderr', async () => {
    const server = await origin({ rateLimitBytesPerSecond: 4 * 1024 * 1024 });
    const before = leftovers();
    const run = await loomToPipe([
      server.url('/model.bin'),
      '-o',
      '-',
      '-w',
      '4',
      '--chunk-size',
      '256KiB',
      '--sha256',
      content.sha256,
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.bytes, SIZE);
    assert.equal(run.sha256, content.sha256);
    assert.match(run.stderr, /^loom: stdout: 6\.29 MB in .* from the origin .*; sha256 matches --sha256$/m);
    assert.deepEqual(leftovers(), before, 'the temporary file is gone');
  });

  it('from a server without ranges too, naming the digest of what went out', async () => {
    const server = await origin({ acceptRanges: false });
    const run = await loomToPipe(['fetch', server.url('/model.bin'), '-o', '-', '-q']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.sha256, content.sha256);
    assert.equal(run.stderr, '');
  });

  it('fails with exit 4 and says stdout is incomplete when the bytes do not match', async () => {
    const server = await origin();
    const run = await loomToPipe(['fetch', server.url('/model.bin'), '-o', '-', '--sha256', 'f'.repeat(64)]);
    assert.equal(run.code, 4, run.stderr);
    assert.match(run.stderr, /sha256 mismatch/);
    assert.ok(run.bytes < SIZE || /stdout got .* and is incomplete/.test(run.stderr), run.stderr);
  });

  it('fails midway with exit 3 and says how much went out when the origin goes away', async () => {
    // Every request after the first 2 MiB's is cut: retries cannot finish the file.
    const server = await origin({
      fault: (ctx) => (ctx.range && ctx.range.start >= 2 * 1024 * 1024 ? { kind: 'reset', afterBytes: 0 } : undefined),
    });
    const run = await loomToPipe([
      'fetch',
      server.url('/model.bin'),
      '-o',
      '-',
      '-w',
      '1',
      '--chunk-size',
      '1MiB',
      '--retries',
      '2',
      '--retry-base-delay',
      '10ms',
    ]);
    assert.equal(run.code, 3, run.stderr);
    assert.ok(run.bytes > 0 && run.bytes <= 2 * 1024 * 1024, `${run.bytes} bytes out`);
    assert.equal(
      run.sha256,
      createHash('sha256').update(content.bytes.subarray(0, run.bytes)).digest('hex'),
      'what went out is the start of the file, in order',
    );
    assert.ok(
      run.stderr.endsWith(`loom: stdout got ${formatBytes(run.bytes)} of the file and is incomplete\n`),
      run.stderr,
    );
    // The temporary file is gone: the error promises no resume.
    assert.doesNotMatch(run.stderr, /kept and resumed/);
    assert.match(run.stderr, /then rerun: -o - keeps nothing to resume from: a rerun starts over\n/);
  });

  it('stops with exit 5 when the reader closes the pipe, leaving nothing behind', async () => {
    const server = await origin({ rateLimitBytesPerSecond: 2 * 1024 * 1024 });
    const before = leftovers();
    const run = await loomToPipe(['fetch', server.url('/model.bin'), '-o', '-', '-w', '2'], 1000);
    assert.equal(run.code, 5, run.stderr);
    assert.match(run.stderr, /writing to stdout failed after .*: the reading end of the pipe was closed/);
    assert.deepEqual(leftovers(), before);
  });

  it('stops cleanly on SIGHUP (the terminal went away), leaving nothing in the temporary folder', async () => {
    const server = await origin({ rateLimitBytesPerSecond: 512 * 1024 });
    const before = leftovers();
    const child = spawn(process.execPath, [LOOM_BIN, 'fetch', server.url('/model.bin'), '-o', '-', '-w', '2'], {
      env: { ...process.env, LOOM_CACHE_DIR: join(dir, 'cache') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    let bytes = 0;
    const someOut = new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        bytes += d.length;
        resolve();
      }),
    );
    await someOut;
    child.kill('SIGHUP');
    assert.equal(await closed, 130, stderr);
    assert.ok(bytes < SIZE, `${bytes} bytes out`);
    assert.match(stderr, /loom: SIGHUP: stopping/);
    assert.deepEqual(leftovers(), before, 'the temporary folder is gone');
  });

  it('with a full $TMPDIR says to free space there or move TMPDIR, not to choose another --out', async () => {
    const server = await origin();
    const small = mountTmpfs(1024 * 1024);
    const child = spawn(process.execPath, [LOOM_BIN, 'fetch', server.url('/model.bin'), '-o', '-'], {
      env: { ...process.env, TMPDIR: small, LOOM_CACHE_DIR: join(dir, 'cache') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.resume();
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 5, stderr);
    assert.match(stderr, /not enough space for .*: 6\.29 MB needed/);
    assert.match(stderr, /-o - assembles the file in .* first: free space there or set TMPDIR to a folder with room\n/);
    assert.doesNotMatch(stderr, /--out|rerun to resume/);
    assert.deepEqual(readdirSync(small), [], 'nothing left in the full folder');
  });

  it('refuses --json (stdout is the file) and --serve (no file to register)', async () => {
    const json = await runLoom(['fetch', 'http://127.0.0.1:1/x', '-o', '-', '--json']);
    assert.equal(json.code, 2);
    assert.match(json.stderr, /--json and -o - both write to stdout/);
    const serve = await runLoom(['fetch', 'http://127.0.0.1:1/x', '-o', '-', '--serve']);
    assert.equal(serve.code, 2);
    assert.match(serve.stderr, /--serve registers the downloaded file/);
  });
});
