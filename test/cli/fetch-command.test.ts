// `loom fetch` as a user runs it: the built binary in a child process, its exit code,
// its output, and what it leaves on disk (including after kill -9 and Ctrl-C).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { DiskFullError, fetchFile } from '../../src/index.js';
import { collect, randomContent, runLoom, sha256OfFile, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

const dir = tempDir();
const SIZE = 8 * 1024 * 1024;
const content = randomContent(SIZE);
const servers: OriginServer[] = [];
async function origin(options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  server.setFile('/model.bin', content.bytes);
  servers.push(server);
  return server;
}
after(() => Promise.all(servers.map((s) => s.close())));

describe('loom fetch', () => {
  it('downloads and prints one JSON summary with --json', async () => {
    const server = await origin();
    const out = join(dir, 'json.bin');
    const run = await runLoom(['fetch', server.url('/model.bin'), '-o', out, '--json', '--sha256', content.sha256]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, '');
    const summary = JSON.parse(run.stdout) as Record<string, unknown>;
    assert.equal(summary.ok, true);
    assert.equal(summary.bytes, SIZE);
    assert.equal(summary.sha256, content.sha256);
    assert.equal(summary.resumedBytes, 0);
    assert.equal(typeof summary.lastByteToDigestSeconds, 'number', 'the sha256 was computed, so its delay is known');
    assert.equal(typeof summary.mbPerSecond, 'number');
    assert.ok((summary.requests as number) >= 1);
    assert.equal(await sha256OfFile(out), content.sha256);
  });

  it("accepts the original tool's --url/--out/--workers and derives --out from the URL", async () => {
    const server = await origin();
    const out = join(dir, 'orig.bin');
    const run = await runLoom(['fetch', '--url', server.url('/model.bin'), '--out', out, '--workers', '4', '-q']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, '');
    assert.equal(await sha256OfFile(out), content.sha256);

    const cwd = tempDir();
    const derived = await runLoom(['fetch', '--url', server.url('/model.bin'), '-q'], {}, cwd);
    assert.equal(derived.code, 0, derived.stderr);
    assert.equal(await sha256OfFile(join(cwd, 'model.bin')), content.sha256);

    const intoDirectory = await runLoom(['fetch', server.url('/model.bin'), '-o', `${dir}/`, '-q']);
    assert.equal(intoDirectory.code, 0, intoDirectory.stderr);
    assert.equal(await sha256OfFile(join(dir, 'model.bin')), content.sha256);
  });

  it('trusts a private CA named by NODE_EXTRA_CA_CERTS, and refuses the origin without it', async () => {
    const { makeTestCa } = await import('../support/test-ca.js');
    const ca = makeTestCa();
    const server = await origin({ tls: { key: ca.serverKey, cert: ca.serverCert } });
    const out = join(dir, 'extra-ca.bin');
    const args = ['fetch', server.url('/model.bin'), '-o', out, '--no-cache', '--retries', '1', '-q'];
    const refused = await runLoom(args);
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /certificate/i);
    assert.equal(existsSync(out), false);
    const trusted = await runLoom(args, { NODE_EXTRA_CA_CERTS: ca.caCertFile });
    assert.equal(trusted.code, 0, trusted.stderr);
    assert.equal(await sha256OfFile(out), content.sha256);
  });

  it('exits 2 with one line for an invalid URL, an unknown flag or a bad worker count', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['fetch', 'not-a-url', '-o', join(dir, 'x')], /"not-a-url" is not a URL; give it with its scheme/],
      [['fetch', 'http://[bad', '-o', join(dir, 'x')], /not a valid URL/],
      [['fetch', 'ftp://host/file', '-o', join(dir, 'x')], /unsupported URL scheme/],
      // Without a subcommand too: the scheme is what is wrong, not the command.
      [
        ['ftp://host/file', '-o', join(dir, 'x')],
        /^loom: error: unsupported URL scheme "ftp:" in ftp:\/\/host\/file; loom fetches http:\/\/, https:\/\/, hf:\/\/, s3:\/\/ URLs\n$/,
      ],
      [['ftp://host/file'], /unsupported URL scheme "ftp:"/],
      [['fetch', 'http://127.0.0.1:1/x', '--bogus'], /unknown option '--bogus'/],
      [['fetch', 'http://127.0.0.1:1/x', '--workers', '-3'], /whole number from 1 to 256/],
      [['fetch', 'http://127.0.0.1:1/x', '--workers', '0'], /whole number from 1 to 256/],
      [['fetch', 'http://127.0.0.1:1/x', '--chunk-size', 'huge'], /size such as/],
      [['fetch', 'http://127.0.0.1:1/x', '-o', join(dir, 'x'), '--sha256', 'abc'], /64 hex digits/],
    ];
    for (const [args, message] of cases) {
      const run = await runLoom(args);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, message);
      assert.match(run.stderr.split('\n')[0]!, /^loom: error: /);
    }
    assert.equal(existsSync(join(dir, 'x')), false);
  });

  it('exits 3 on a 404 and 4 on a sha256 mismatch, leaving nothing at --out', async () => {
    const server = await origin();
    const missing = await runLoom(['fetch', server.url('/nope.bin'), '-o', join(dir, 'nope.bin')]);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /HTTP 404.*nope\.bin/);
    const out = join(dir, 'bad.bin');
    const bad = await runLoom(['fetch', server.url('/model.bin'), '-o', out, '--sha256', 'f'.repeat(64), '--json']);
    assert.equal(bad.code, 4);
    assert.match(bad.stderr, new RegExp(`expected f{64}, got ${content.sha256}`));
    assert.equal((JSON.parse(bad.stdout) as { error: { code: string } }).error.code, 'LOOM_ERR_DIGEST_MISMATCH');
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.part`), false);
  });

  it('makes a missing directory; exits 5 with a clear message for a read-only one', async () => {
    const server = await origin();
    const out = join(dir, 'no', 'such', 'dir', 'f.bin');
    const missing = await runLoom(['fetch', server.url('/model.bin'), '--no-cache', '-o', out]);
    assert.equal(missing.code, 0, missing.stderr);
    assert.equal(await sha256OfFile(out), content.sha256);
    const readOnly = mountTmpfs(1024 * 1024, { readOnly: true });
    const ro = await runLoom(['fetch', server.url('/model.bin'), '--no-cache', '-o', join(readOnly, 'f.bin')]);
    assert.equal(ro.code, 5);
    assert.match(ro.stderr, /read-only file system while checking the output folder/);
    const below = await runLoom([
      'fetch',
      server.url('/model.bin'),
      '--no-cache',
      '-o',
      join(readOnly, 'sub', 'f.bin'),
    ]);
    assert.equal(below.code, 5);
    assert.match(below.stderr, /read-only file system while creating the output folder .*\/sub/);
  });

  it('makes the folders -o a/../b/x.bin names, read as the kernel reads it (as curl --create-dirs)', async () => {
    const server = await origin();
    const cwd = tempDir();
    const run = await runLoom(['fetch', server.url('/model.bin'), '-o', 'a/../b/x.bin', '-q'], {}, cwd);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(join(cwd, 'b', 'x.bin')), content.sha256);
    assert.deepEqual(readdirSync(cwd).sort(), ['a', 'b']);
    assert.deepEqual(readdirSync(join(cwd, 'a')), []);
    // A folder given with a trailing slash keeps its `..` too.
    const intoFolder = await runLoom(['fetch', server.url('/model.bin'), '-o', 'c/../d/', '-q'], {}, cwd);
    assert.equal(intoFolder.code, 0, intoFolder.stderr);
    assert.equal(await sha256OfFile(join(cwd, 'd', 'model.bin')), content.sha256);
    assert.deepEqual(readdirSync(cwd).sort(), ['a', 'b', 'c', 'd']);
  });

  it('a copy placed at -o link/../out/x.bin keeps its record through gc, and is kept by the next fetch', async () => {
    const server = await origin();
    const cwd = tempDir();
    const cacheDir = join(tempDir(), 'cache');
    // `link` leads to another file system: the output is a copy, with a record in copies/.
    const other = mountTmpfs(4 * SIZE);
    mkdirSync(join(other, 'inner'));
    symlinkSync(join(other, 'inner'), join(cwd, 'link'));
    const fetch = () =>
      runLoom(
        ['fetch', server.url('/model.bin'), '-o', 'link/../out/x.bin', '--cache-dir', cacheDir, '--json'],
        {},
        cwd,
      );
    const first = await fetch();
    assert.equal(first.code, 0, first.stderr);
    const placed = join(other, 'out', 'x.bin');
    assert.equal(await sha256OfFile(placed), content.sha256);
    const { ino } = statSync(placed);
    const gc = await runLoom(['cache', 'gc', '--cache-dir', cacheDir]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.equal(readdirSync(join(cacheDir, 'copies')).length, 1, 'the copy is there: its record stays');
    const second = await fetch();
    assert.equal(second.code, 0, second.stderr);
    assert.equal((JSON.parse(second.stdout) as { cache: string }).cache, 'hit');
    assert.equal(statSync(placed).ino, ino, 'the copy in place was kept, not copied again');
  });

  it('a failed fetch removes the folders it made for -o, only those, and only when empty', async () => {
    const server = await origin({
      fault: (ctx) => (ctx.range && ctx.range.start >= 4 * 1024 * 1024 ? { kind: 'status', status: 500 } : undefined),
    });
    const cwd = tempDir();
    mkdirSync(join(cwd, 'kept'));
    // A 404, with the cache and without it: nothing is left in the folders it made.
    for (const flags of [[], ['--no-cache']]) {
      const missing = await runLoom(
        ['fetch', server.url('/nope.bin'), '-o', 'kept/new/a/../deeper/x.bin', '-q', ...flags],
        {},
        cwd,
      );
      assert.equal(missing.code, 3, missing.stderr);
      assert.deepEqual(readdirSync(cwd), ['kept']);
      assert.deepEqual(readdirSync(join(cwd, 'kept')), [], flags.join(' '));
    }
    // A download that fails half-way straight to --out keeps its part and journal for a
    // rerun, and so the folder they are in.
    const half = await runLoom(
      [
        'fetch',
        server.url('/model.bin'),
        '-o',
        'kept/half/x.bin',
        '--no-cache',
        '--chunk-size',
        '1MiB',
        '--retries',
        '1',
        '-q',
      ],
      {},
      cwd,
    );
    assert.equal(half.code, 3, half.stderr);
    assert.deepEqual(readdirSync(join(cwd, 'kept', 'half')).sort(), ['x.bin.part', 'x.bin.part.journal']);
  });

  it('a failed fetch leaves the folders it made when another fetch is writing into them', async () => {
    // Two fetches into one new folder (a pod pulling a model's files in parallel): the first
    // makes models/llama, the second finds it there; the first then fails.
    let releaseMissing!: () => void;
    let releaseModel!: () => void;
    const missingHeld = new Promise<void>((resolve) => (releaseMissing = resolve));
    const modelHeld = new Promise<void>((resolve) => (releaseModel = resolve));
    const server = await origin({
      fault: (ctx) =>
        ctx.path === '/nope.bin'
          ? { kind: 'hold', until: missingHeld }
          : ctx.index === 2
            ? { kind: 'hold', until: modelHeld }
            : undefined,
    });
    const cwd = tempDir();
    const failing = collect(
      startLoom(['fetch', server.url('/nope.bin'), '-o', 'models/llama/nope.bin', '-q'], {}, cwd),
    );
    await waitFor('the first fetch asking', () => server.requests.some((r) => r.path === '/nope.bin'), 30_000);
    const writing = collect(
      startLoom(['fetch', server.url('/model.bin'), '-o', 'models/llama/model.bin', '-q'], {}, cwd),
    );
    await waitFor('the second fetch asking', () => server.requests.some((r) => r.path === '/model.bin'), 30_000);
    releaseMissing();
    const failed = await failing;
    assert.equal(failed.code, 3, failed.stderr);
    releaseModel();
    const wrote = await writing;
    assert.equal(wrote.code, 0, wrote.stderr);
    assert.equal(await sha256OfFile(join(cwd, 'models', 'llama', 'model.bin')), content.sha256);
  });

  it('exits 5 up front when the disk cannot hold the file', async () => {
    const server = await origin();
    const small = mountTmpfs(4 * 1024 * 1024);
    const out = join(small, 'f.bin');
    const run = await runLoom(['fetch', server.url('/model.bin'), '--no-cache', '-o', out]);
    assert.equal(run.code, 5);
    assert.match(run.stderr, /not enough space/);
    assert.equal(existsSync(out), false);
    assert.ok(server.bytesServed <= 10 * 1024 * 1024, 'stopped before downloading the file');
  });

  it('reports ENOSPC mid-download, keeps the partial, and resumes once space is back', async () => {
    const disk = mountTmpfs(12 * 1024 * 1024);
    const filler = join(disk, 'filler');
    const server = await origin({
      fault: (ctx) => {
        // Another process fills the disk while the download runs.
        if (ctx.index === 3) writeFileSync(filler, Buffer.alloc(7 * 1024 * 1024));
        return undefined;
      },
    });
    const out = join(disk, 'f.bin');
    await assert.rejects(
      fetchFile(server.url('/model.bin'), out, {
        workers: 2,
        chunkSize: '1MiB',
        maxRequestSize: '1MiB',
        preallocation: 'truncate',
      }),
      (err: unknown) => err instanceof DiskFullError && /no space left/.test(err.message) && /resume/.test(err.message),
    );
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.part`), true);
    const { rmSync } = await import('node:fs');
    rmSync(filler);
    const result = await fetchFile(server.url('/model.bin'), out, { workers: 2, chunkSize: '1MiB' });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(result.stats.resumedBytes > 0);
  });

  it('after kill -9, a rerun completes and transfers less than the whole file', async () => {
    const server = await origin({ rateLimitBytesPerSecond: 1024 * 1024 });
    const out = join(dir, 'killed.bin');
    const journal = `${out}.part.journal`;
    const args = ['fetch', server.url('/model.bin'), '--no-cache', '-o', out, '-w', '4', '--chunk-size', '1MiB', '-q'];
    const child = startLoom(args);
    const done = collect(child);
    await waitFor(
      'bytes in the journal',
      () =>
        existsSync(journal) && (JSON.parse(readFileSync(journal, 'utf8')) as { ranges: unknown[] }).ranges.length > 0,
    );
    await sleep(300);
    child.kill('SIGKILL');
    const killed = await done;
    assert.equal(killed.signal, 'SIGKILL');
    assert.equal(existsSync(out), false, 'nothing at --out after the kill');
    // The origin counts a body chunk when it writes it: let it see the killed sockets close.
    await waitFor('the killed connections to close', () => server.openConnections === 0);
    server.resetStats();
    const rerun = await runLoom([...args.slice(0, -1), '--json']);
    assert.equal(rerun.code, 0, rerun.stderr);
    const summary = JSON.parse(rerun.stdout) as { resumedBytes: number; transferredBytes: number; splits: number };
    assert.ok(summary.resumedBytes > 0, 'resumed from the journal');
    // What was missing, plus at most what each tail split cut short (the origin writes 64 KiB at a time).
    const missing = SIZE - summary.resumedBytes;
    assert.ok(
      server.bytesServed <= missing + summary.splits * 256 * 1024,
      `rerun served ${server.bytesServed} bytes for ${missing} missing, with ${summary.splits} splits`,
    );
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(existsSync(journal), false);
  });

  it('stops cleanly on Ctrl-C with exit 130 and the journal saved', async () => {
    const server = await origin({ rateLimitBytesPerSecond: 1024 * 1024 });
    const out = join(dir, 'interrupted.bin');
    const child = startLoom([
      'fetch',
      server.url('/model.bin'),
      '--no-cache',
      '-o',
      out,
      '-w',
      '2',
      '--chunk-size',
      '1MiB',
    ]);
    const done = collect(child);
    await waitFor('the download to start', () => existsSync(`${out}.part`));
    await sleep(400);
    child.kill('SIGINT');
    const run = await done;
    assert.equal(run.code, 130, run.stderr);
    assert.match(run.stderr, /rerun the same command to resume/);
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.part.journal`), true);
  });
});
