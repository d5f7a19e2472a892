// Numbers as people type and read them: a bare duration is seconds, one unit convention in
// everything printed, no "0 MB/s" for a small file, errors that name the flag, plurals that
// read right, and `loom cache rm` by digest prefix as git takes one.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { resolveDigestPrefix } from '../../src/cli/cache-command.js';
import { defaultOutFor } from '../../src/cli/fetch-flags.js';
import { decideAfterFailure } from '../../src/fetch/retry-budget.js';
import { randomContent, runLoom, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const dir = tempDir();
const servers: OriginServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));
async function origin(files: Record<string, Buffer>, options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  for (const [path, bytes] of Object.entries(files)) server.setFile(path, bytes);
  servers.push(server);
  return server;
}

describe('numbers on the command line', () => {
  it('reads --stall-timeout 5 as five seconds: a 400 ms first byte is not a stall', async () => {
    const content = randomContent(256 * 1024);
    const server = await origin({ '/slow.bin': content.bytes }, { firstByteLatencyMs: 400 });
    const out = join(dir, 'slow.bin');
    const run = await runLoom([
      'fetch',
      server.url('/slow.bin'),
      '-o',
      out,
      '--no-cache',
      '--stall-timeout',
      '5',
      '--retries',
      '1',
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(out), content.sha256);
  });

  it('prints a small file’s rate in units that show it, in the line and in --json', async () => {
    const content = randomContent(1000);
    const server = await origin({ '/small.bin': content.bytes });
    const run = await runLoom(['fetch', server.url('/small.bin'), '-o', join(dir, 'small.bin'), '--no-cache']);
    assert.equal(run.code, 0, run.stderr);
    const line = run.stderr.trim().split('\n').pop()!;
    assert.match(
      line,
      /^loom: .*small\.bin: 1\.00 kB in \d+\.\d+ s, \d+(\.\d+)? (B|kB|MB)\/s, from the origin \(1 request\)/,
    );
    assert.doesNotMatch(line, / 0 MB\/s/);
    const json = await runLoom([
      'fetch',
      server.url('/small.bin'),
      '-o',
      join(dir, 'small2.bin'),
      '--no-cache',
      '--json',
    ]);
    const summary = JSON.parse(json.stdout) as { mbPerSecond: number; bytesPerSecond: number };
    assert.ok(summary.mbPerSecond > 0, `mbPerSecond ${summary.mbPerSecond}`);
    assert.ok(summary.bytesPerSecond > 0);
  });

  it('names the flag, not the library option, in a value error', { timeout: 60_000 }, async () => {
    for (const [flag, value] of [
      ['--chunk-size', '1K'],
      ['--max-request-size', '1000'],
      ['--stall-timeout', '0'],
    ] as const) {
      const run = await runLoom(['fetch', 'http://127.0.0.1:1/x', '-o', join(dir, 'x'), flag, value]);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, new RegExp(`^loom: error: option '${flag} <[a-z]+>' argument '${value}' is invalid`));
      assert.doesNotMatch(run.stderr, /chunkSize|maxRequestSize|stallTimeout/);
    }
    const header = await runLoom(['fetch', 'http://127.0.0.1:1/x', '-o', join(dir, 'x'), '-H', 'no colon']);
    assert.equal(header.code, 2, header.stderr);
    assert.match(header.stderr, /^loom: error: option '-H, --header <line>' argument 'no colon' is invalid/);
    const ttl = await runLoom(['control-plane', '--legacy-ttl', '0', '--listen', '127.0.0.1:0']);
    assert.equal(ttl.code, 2, ttl.stderr);
    assert.match(ttl.stderr, /^loom: error: --legacy-ttl "0" must be longer than 0/);
    const sha = await runLoom(['fetch', 'http://127.0.0.1:1/x', '-o', join(dir, 'x'), '--sha256', 'abc']);
    assert.equal(sha.code, 2);
    assert.match(sha.stderr, /^loom: error: invalid --sha256: must be 64 hex digits/);
  });

  it('says "after 1 attempt" in the library\'s own message too', () => {
    const decision = decideAfterFailure(
      Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }),
      { attempts: 0 },
      { failuresInARow: 0, maxConcurrency: 1 },
      { attempts: 1, baseDelayMs: 1, factor: 2, maxDelayMs: 1, maxRetryAfterMs: 1 },
      'bytes 0-9',
      'http://h/x',
    );
    assert.equal(decision.kind, 'drop-source');
    assert.match((decision as { reason: Error }).reason.message, /after 1 attempt: socket hang up/);
  });

  it('says "after 1 attempt" when --retries 1 gives up', async () => {
    const server = await origin(
      { '/reset.bin': randomBytes(100_000) },
      { fault: () => ({ kind: 'reset', afterBytes: 10 }) },
    );
    const run = await runLoom(['fetch', server.url('/reset.bin'), '-o', join(dir, 'reset.bin'), '--retries', '1']);
    assert.equal(run.code, 3, run.stderr);
    assert.match(run.stderr, /after 1 attempt:/);
  });
});

describe('the default output name', () => {
  it('is a plain name in the output folder, whatever the URL encodes', () => {
    assert.equal(defaultOutFor('http://h/x%2F..%2F..%2Fevil'), 'evil');
    assert.equal(defaultOutFor('http://h/a%5C..%5Cevil.bin'), 'evil.bin');
    assert.equal(defaultOutFor('http://h/models/llama%202.gguf?sig=1'), 'llama 2.gguf');
    assert.equal(defaultOutFor('http://h/dir/'), 'dir');
    for (const url of ['http://h/', 'http://h/%2F', 'http://h/x%2F..', 'http://h/..%2F', 'http://h/a%0Ab']) {
      assert.throws(() => defaultOutFor(url), /cannot take a file name/, url);
    }
  });

  it('never writes outside the output folder for an encoded ../ in the URL', async () => {
    const content = randomContent(4096);
    const server = await origin({ '/x%2F..%2F..%2Fevil': content.bytes });
    const root = tempDir();
    const cwd = join(root, 'a', 'b');
    (await import('node:fs')).mkdirSync(cwd, { recursive: true });
    const run = await runLoom(['fetch', server.url('/x%2F..%2F..%2Fevil'), '-q'], {}, cwd);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(join(cwd, 'evil')), content.sha256);
    assert.equal(existsSync(join(root, 'evil')), false);
    assert.deepEqual(readdirSync(root), ['a']);
  });
});

describe('loom cache rm by digest prefix', () => {
  it('resolves a unique prefix, refuses an ambiguous or short one', () => {
    const digests = ['abcd' + '0'.repeat(60), 'abce' + '1'.repeat(60), 'ffff' + '2'.repeat(60)];
    assert.equal(resolveDigestPrefix('abcd', digests), digests[0]);
    assert.equal(resolveDigestPrefix('FFFF22', digests), digests[2]);
    assert.throws(() => resolveDigestPrefix('abc', digests), /too short/);
    assert.throws(() => resolveDigestPrefix('0000', digests), /no blob in the cache starts with 0000/);
    assert.equal(resolveDigestPrefix('http://h/x', digests), 'http://h/x');
  });

  it('removes a blob by an unambiguous prefix and lists the matches of an ambiguous one', async () => {
    // Two contents whose digests share their first four hex digits (a birthday search).
    const seen = new Map<string, Buffer>();
    let pair: [Buffer, Buffer] | undefined;
    while (!pair) {
      const bytes = randomBytes(64);
      const prefix = createHash('sha256').update(bytes).digest('hex').slice(0, 4);
      const other = seen.get(prefix);
      if (other) pair = [other, bytes];
      else seen.set(prefix, bytes);
    }
    const third = randomBytes(64);
    const server = await origin({ '/a.bin': pair[0], '/b.bin': pair[1], '/c.bin': third });
    const cacheDir = tempDir('loom-cache-');
    for (const name of ['a.bin', 'b.bin', 'c.bin']) {
      const run = await runLoom([
        'fetch',
        server.url(`/${name}`),
        '-o',
        join(dir, name),
        '-q',
        '--cache-dir',
        cacheDir,
      ]);
      assert.equal(run.code, 0, run.stderr);
    }
    const digestOf = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    const shared = digestOf(pair[0]).slice(0, 4);
    const ambiguous = await runLoom(['cache', 'rm', shared, '--cache-dir', cacheDir]);
    assert.equal(ambiguous.code, 2, ambiguous.stderr);
    assert.match(ambiguous.stderr, new RegExp(`ambiguous: it matches .*${digestOf(pair[0])}`));
    assert.match(ambiguous.stderr, new RegExp(digestOf(pair[1])));

    const unique = await runLoom(['cache', 'rm', digestOf(third).slice(0, 10), '--cache-dir', cacheDir]);
    assert.equal(unique.code, 0, unique.stderr);
    assert.equal(unique.stderr, `loom: removed ${digestOf(third)}\n`);
    const list = await runLoom(['cache', 'ls', '--cache-dir', cacheDir]);
    assert.match(list.stdout, /^2 blobs, /m);
    assert.doesNotMatch(list.stdout, new RegExp(digestOf(third)));
  });
});
