// Mistakes in what the user types (flags, environment variables, paths) are usage errors
// (exit 2) said before any request, and with --json they print the same {"ok":false,…}
// document every other failure prints.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { TestHub } from '../support/test-hub.js';
import { collect, randomContent, runLoom, sha256OfFile, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { testRepos } from '../hub/fixtures.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

const content = randomContent(256 * 1024);
let server: OriginServer | undefined;
after(() => server?.close());

async function origin(): Promise<OriginServer> {
  server ??= await new OriginServer().listen();
  server.setFile('/model.bin', content.bytes);
  server.resetStats();
  return server;
}

/** stdout as the one JSON failure document --json promises; fails the test otherwise. */
function jsonFailure(stdout: string): { code: string; message: string } {
  const doc = JSON.parse(stdout) as { ok: boolean; error: { code: string; message: string } };
  assert.equal(doc.ok, false);
  return doc.error;
}

describe('--json on a command line the flag parser refuses', () => {
  const cases: { args: (url: string) => string[]; message: RegExp }[] = [
    { args: (url) => ['fetch', url, '--json', '-o', 'x', '-w', '0'], message: /workers.*whole number from 1/ },
    { args: (url) => ['fetch', url, '--json', '-o', 'x', '--bogus'], message: /unknown option '--bogus'/ },
    { args: (url) => ['fetch', url, '-o', 'x', '--stall-timeout', '-5', '--json'], message: /stall-timeout/ },
    { args: (url) => [url, '--json', '--bogus'], message: /unknown option '--bogus'/ },
    { args: () => ['pull', 'org/model', '--repo-type', 'widget', '--json'], message: /one of model, dataset, space/ },
    { args: () => ['cache', 'gc', '--max-size', 'lots', '--json'], message: /--max-size "lots" is not a size/ },
    { args: () => ['cache', 'rm', '--json'], message: /missing required argument/ },
  ];
  for (const { args, message } of cases) {
    it(`prints {"ok":false} with LOOM_ERR_USAGE and exits 2: loom ${args('URL').join(' ')}`, async () => {
      const origin_ = await origin();
      const run = await runLoom(args(origin_.url('/model.bin')));
      assert.equal(run.code, 2, run.stderr);
      const error = jsonFailure(run.stdout);
      assert.equal(error.code, 'LOOM_ERR_USAGE');
      assert.match(error.message, message);
      assert.match(run.stderr, /^loom: error: /, 'stderr still says it for a person');
      assert.equal(origin_.requests.length, 0);
    });
  }

  it('prints nothing on stdout without --json', async () => {
    const run = await runLoom(['cache', 'gc', '--max-size', 'lots']);
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '');
  });
});

describe('empty paths (an unset shell variable) are usage errors before any request', () => {
  it('-o "" exits 2 naming --out, fetches nothing and leaves nothing, with or without the cache', async () => {
    for (const extra of [[], ['--no-cache']]) {
      const origin_ = await origin();
      const cwd = tempDir();
      const cacheDir = tempDir('loom-cache-');
      const run = await runLoom(
        ['fetch', origin_.url('/model.bin'), '-o', '', '--json', ...extra],
        {
          LOOM_CACHE_DIR: cacheDir,
        },
        cwd,
      );
      assert.equal(run.code, 2, run.stderr);
      assert.equal(jsonFailure(run.stdout).code, 'LOOM_ERR_USAGE');
      assert.match(run.stderr, /^loom: error: --out is empty/);
      assert.equal(origin_.requests.length, 0, 'nothing was asked of the origin');
      assert.deepEqual(readdirSync(cwd), [], 'no .part left in the working folder');
      assert.deepEqual(readdirSync(cacheDir), [], 'nothing cached');
    }
  });

  it('an empty LOOM_CACHE_DIR or --cache-dir "" on fetch exits 2 naming it, before any request', async () => {
    const origin_ = await origin();
    const cwd = tempDir();
    const env = await runLoom(['fetch', origin_.url('/model.bin'), '-o', 'x.bin'], { LOOM_CACHE_DIR: '' }, cwd);
    assert.equal(env.code, 2, env.stderr);
    assert.match(env.stderr, /^loom: error: LOOM_CACHE_DIR is empty/);
    const flag = await runLoom(['fetch', origin_.url('/model.bin'), '-o', 'x.bin', '--cache-dir', ''], {}, cwd);
    assert.equal(flag.code, 2, flag.stderr);
    assert.match(flag.stderr, /^loom: error: --cache-dir is empty/);
    assert.equal(origin_.requests.length, 0);
    assert.deepEqual(readdirSync(cwd), []);
  });

  it('--no-cache does not need a cache root, so an empty LOOM_CACHE_DIR is no error there', async () => {
    const origin_ = await origin();
    const cwd = tempDir();
    const run = await runLoom(
      ['fetch', origin_.url('/model.bin'), '-o', 'x.bin', '--no-cache', '-q'],
      {
        LOOM_CACHE_DIR: '',
      },
      cwd,
    );
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(readdirSync(cwd), ['x.bin']);
  });
});

describe('loom pull with empty paths', () => {
  let hub: TestHub;
  const root = tempDir('loom-hf-empty-');
  const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    HF_ENDPOINT: hub.endpoint,
    HF_HOME: join(root, 'hf-home'),
    HF_HUB_CACHE: '',
    HF_TOKEN: '',
    HF_TOKEN_PATH: '',
    HF_HUB_OFFLINE: '',
    ...extra,
  });
  before(async () => {
    hub = await TestHub.start({ repos: testRepos() });
  });
  after(() => hub.close());

  it('a token with a line break in it (HF_TOKEN, --token) exits 2 naming where it came from', async () => {
    for (const { args, extraEnv, name } of [
      { args: [], extraEnv: { HF_TOKEN: 'hf_tok\nen' }, name: 'HF_TOKEN' },
      { args: ['--token', 'hf_tok\ten'], extraEnv: {}, name: '--token' },
    ]) {
      hub.resetStats();
      const run = await runLoom(['pull', 'acme/tiny-llm', '--json', ...args], env(extraEnv));
      assert.equal(run.code, 2, run.stderr);
      const error = jsonFailure(run.stdout);
      assert.equal(error.code, 'LOOM_ERR_USAGE');
      assert.match(error.message, new RegExp(`^${name} contains a control character`));
      assert.equal(hub.stats.cdnBytes + hub.stats.hubFileBytes, 0, 'nothing transferred');
    }
  });

  it('an empty LOOM_CACHE_DIR, --cache-dir "" or --out "" exits 2 naming it, with nothing downloaded', async () => {
    const runs = [
      { args: [], extraEnv: { LOOM_CACHE_DIR: '' }, message: /LOOM_CACHE_DIR is empty/ },
      { args: ['--cache-dir', ''], extraEnv: {}, message: /--cache-dir is empty/ },
      { args: ['--out', ''], extraEnv: {}, message: /--out is empty/ },
    ];
    for (const { args, extraEnv, message } of runs) {
      hub.resetStats();
      const run = await runLoom(['pull', 'acme/tiny-llm', '--json', ...args], env(extraEnv));
      assert.equal(run.code, 2, run.stderr);
      assert.match(jsonFailure(run.stdout).message, message);
      assert.equal(hub.stats.cdnBytes + hub.stats.hubFileBytes, 0, 'nothing transferred');
    }
  });
});

describe('durations longer than a timer can wait', () => {
  it('--stall-timeout 600h (and the other duration flags) exit 2 naming the maximum, before any request', async () => {
    const origin_ = await origin();
    for (const flag of ['--stall-timeout', '--retry-base-delay', '--max-retry-after']) {
      const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', join(tempDir(), 'x.bin'), flag, '600h']);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, new RegExp(`${flag}.*'600h' is invalid\\. must be at most 596h`));
      assert.doesNotMatch(run.stderr, /TimeoutOverflowWarning/);
    }
    assert.equal(origin_.requests.length, 0);
  });

  it('loom control-plane --node-ttl 600h exits 2 naming the maximum (it started and ran before)', async () => {
    const child = startLoom([
      'control-plane',
      '--listen',
      '127.0.0.1:0',
      '--store',
      `sqlite:${join(tempDir(), 'cp.db')}`,
      '--node-ttl',
      '600h',
    ]);
    // A control plane that accepted the flag serves until stopped: stopped here, the test fails on its code.
    const stop = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const run = await collect(child);
    clearTimeout(stop);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /--node-ttl "600h" must be at most 596h/);
  });
});

describe('header values and tokens with control characters', () => {
  it('-H with a control character in its value exits 2 naming the header, before any request', async () => {
    const origin_ = await origin();
    const run = await runLoom([
      'fetch',
      origin_.url('/model.bin'),
      '-o',
      join(tempDir(), 'x.bin'),
      '-H',
      'X-Key: a\u0001b',
      '--json',
    ]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(jsonFailure(run.stdout).message, /the header value contains a control character/);
    assert.equal(origin_.requests.length, 0);
  });

  it('LOOM_TOKEN with a line break exits 2 naming it (it was sent to the control plane as it was)', async () => {
    const origin_ = await origin();
    const run = await runLoom(
      ['fetch', origin_.url('/model.bin'), '-o', join(tempDir(), 'x.bin'), '--control-plane', 'http://127.0.0.1:1'],
      { LOOM_TOKEN: '0123456789abcdef\n0123456789abcdef' },
    );
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /^loom: error: LOOM_TOKEN contains a control character/m);
    assert.equal(origin_.requests.length, 0);
  });
});

describe('a free-space check that fails', () => {
  it('leaves nothing at the output folder and shows the shortfall in bytes when rounding hides it', async () => {
    const small = mountTmpfs(1024 * 1024);
    const origin_ = await origin();
    // One byte more than is free (the part's lock file is empty: it takes no page): both round alike.
    const { bavail, bsize } = statfsSync(small);
    origin_.setFile('/big.bin', randomContent(bavail * bsize + 1).bytes);
    const run = await runLoom(['fetch', origin_.url('/big.bin'), '-o', join(small, 'p.bin'), '--no-cache']);
    assert.equal(run.code, 5, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(`not enough space for .*: ${bavail * bsize + 1} bytes needed, ${bavail * bsize} bytes free`),
    );
    assert.deepEqual(readdirSync(small), [], 'no .part, .part.journal or lock left behind');
  });

  it('leaves nothing at the output folder with the cache on another file system', async () => {
    const small = mountTmpfs(1024 * 1024);
    const origin_ = await origin();
    origin_.setFile('/bigger.bin', randomContent(2 * 1024 * 1024).bytes);
    const run = await runLoom(['fetch', origin_.url('/bigger.bin'), '-o', join(small, 'p.bin')], {
      LOOM_CACHE_DIR: tempDir('loom-cache-'),
    });
    assert.equal(run.code, 5, run.stderr);
    assert.match(run.stderr, /not enough space|no space left/);
    assert.deepEqual(readdirSync(small), [], 'no .part, .part.journal or lock left behind');
  });
});

describe('smaller input mistakes, each said for what it is', () => {
  it('LOOM_OFFLINE=true (as HF_HUB_OFFLINE takes it) serves a hit without asking the origin', async () => {
    const origin_ = await origin();
    const cacheDir = tempDir('loom-cache-');
    const first = await runLoom(['fetch', origin_.url('/model.bin'), '-o', join(tempDir(), 'a.bin'), '-q'], {
      LOOM_CACHE_DIR: cacheDir,
    });
    assert.equal(first.code, 0, first.stderr);
    for (const value of ['true', 'yes', 'ON']) {
      origin_.resetStats();
      const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', join(tempDir(), 'b.bin'), '--json'], {
        LOOM_CACHE_DIR: cacheDir,
        LOOM_OFFLINE: value,
      });
      assert.equal(run.code, 0, run.stderr);
      assert.equal((JSON.parse(run.stdout) as { cache: string }).cache, 'hit');
      assert.equal(origin_.requests.length, 0, `LOOM_OFFLINE=${value}: the origin was not asked`);
    }
  });

  it('a junk LOOM_CONTROL_PLANE is named as the variable, with the control plane port in the example', async () => {
    const origin_ = await origin();
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', join(tempDir(), 'x.bin')], {
      LOOM_CONTROL_PLANE: 'not-a-url',
    });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /^loom: error: LOOM_CONTROL_PLANE "not-a-url" is not a URL; e\.g\. http:\/\/10\.0\.0\.5:7070\n/,
    );
  });

  it('-o in a folder that takes no new files (/proc) says so, not that the folder does not exist', async () => {
    const origin_ = await origin();
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', '/proc/loom-test.bin', '--no-cache']);
    assert.equal(run.code, 5, run.stderr);
    assert.match(run.stderr, /cannot create files in \/proc while locking \/proc\/loom-test\.bin\.part/);
    assert.doesNotMatch(run.stderr, /does not exist/);
  });

  it('--ca-cert naming a file that cannot be read exits 2, for an http URL too', async () => {
    const origin_ = await origin();
    const out = join(tempDir(), 'x.bin');
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', out, '--ca-cert', '/nonexistent/ca.pem']);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /cannot read --ca-cert \/nonexistent\/ca\.pem: no such file/);
    assert.equal(origin_.requests.length, 0);
    const pull = await runLoom(['pull', 'org/model', '--ca-cert', '/nonexistent/ca.pem']);
    assert.equal(pull.code, 2, pull.stderr);
    assert.match(pull.stderr, /cannot read --ca-cert \/nonexistent\/ca\.pem/);
  });

  it('s3://bucket without a key (or a prefix/) says the key is missing, exit 2', async () => {
    for (const url of ['s3://some-bucket', 's3://some-bucket/', 's3://some-bucket/models/']) {
      const run = await runLoom(['fetch', url, '-o', join(tempDir(), 'x.bin')], {
        AWS_ACCESS_KEY_ID: '',
        AWS_SECRET_ACCESS_KEY: '',
        AWS_PROFILE: 'loom-test-none',
      });
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, new RegExp(`^loom: error: ${url} names no object: the key is missing`));
    }
  });

  it('control-plane --store sqlite: in a folder that does not exist exits 2 and creates nothing', async () => {
    const missing = join(tempDir(), 'no', 'such');
    const child = startLoom([
      'control-plane',
      '--listen',
      '127.0.0.1:0',
      '--store',
      `sqlite:${join(missing, 'cp.db')}`,
    ]);
    // A control plane that made the folder serves until stopped: stopped here, the test fails on its code.
    const stop = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const run = await collect(child);
    clearTimeout(stop);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /--store sqlite:.*: the folder .*\/no\/such does not exist/);
    assert.equal(existsSync(join(missing, '..')), false, 'not even its parent was made');
  });
});

describe('a --no-cache rerun with --sha256 added', () => {
  let slow: OriginServer | undefined;
  after(() => slow?.close());
  const big = randomContent(8 * 1024 * 1024);

  /** A --no-cache download stopped by Ctrl-C part way: its .part and journal are kept. */
  async function interrupted(out: string): Promise<OriginServer> {
    slow ??= await new OriginServer({ rateLimitBytesPerSecond: 2 * 1024 * 1024 }).listen();
    slow.setFile('/big.bin', big.bytes);
    const child = startLoom([
      'fetch',
      slow.url('/big.bin'),
      '-o',
      out,
      '--no-cache',
      '-w',
      '2',
      '--chunk-size',
      '1MiB',
    ]);
    const done = collect(child);
    await waitFor(
      'a journal with bytes in it',
      () => {
        try {
          const journal = JSON.parse(readFileSync(`${out}.part.journal`, 'utf8')) as { ranges: [number, number][] };
          return journal.ranges.reduce((sum, [s, e]) => sum + e - s, 0) >= 1024 * 1024;
        } catch {
          return false;
        }
      },
      30_000,
    );
    child.kill('SIGINT');
    assert.equal((await done).code, 130);
    return slow;
  }

  it('resumes the partial the unpinned run left, and checks it against the pin', async () => {
    const out = join(tempDir(), 'pinned.bin');
    const origin_ = await interrupted(out);
    origin_.resetStats();
    const run = await runLoom([
      'fetch',
      origin_.url('/big.bin'),
      '-o',
      out,
      '--no-cache',
      '--sha256',
      big.sha256,
      '--json',
    ]);
    assert.equal(run.code, 0, run.stderr);
    const summary = JSON.parse(run.stdout) as { resumedBytes: number; transferredBytes: number; sha256: string };
    assert.ok(summary.resumedBytes >= 1024 * 1024, `resumed ${summary.resumedBytes} bytes`);
    assert.ok(origin_.bytesServed < big.bytes.length, 'the origin sent less than the whole file');
    assert.equal(summary.sha256, big.sha256);
    assert.equal(await sha256OfFile(out), big.sha256);
  });

  it('a resumed partial that misses the pin fails with exit 4 and keeps nothing', async () => {
    const dir = tempDir();
    const out = join(dir, 'wrong.bin');
    const origin_ = await interrupted(out);
    origin_.resetStats();
    const run = await runLoom(['fetch', origin_.url('/big.bin'), '-o', out, '--no-cache', '--sha256', '0'.repeat(64)]);
    assert.equal(run.code, 4, run.stderr);
    assert.ok(origin_.bytesServed < big.bytes.length, 'the partial was resumed, then checked');
    assert.deepEqual(readdirSync(dir), [], 'the resumed bytes that miss the pin are not kept');
  });
});
