// `loom pull` and `loom fetch hf://…` as a user runs them (the built binary) against the test
// Hub: the token found where the hf CLI keeps it, the snapshot path on stdout, the Hub's
// errors as one line and a documented exit code, HF_HUB_OFFLINE served from the HF cache.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXIT } from '../../src/core/errors.js';
import { runLoom, sha256Of, tempDir } from '../helpers/fixtures.js';
import { TestHub, sha256Hex } from '../support/test-hub.js';
import { MAIN, TOKEN, mainFiles, testRepos, v1Files } from './fixtures.js';

describe('loom pull and loom fetch hf:// (CLI)', () => {
  let hub: TestHub;
  const root = tempDir('loom-hf-cli-');
  const hfHome = join(root, 'hf-home');
  const env = (): NodeJS.ProcessEnv => ({
    HF_ENDPOINT: hub.endpoint,
    HF_HOME: hfHome,
    HF_HUB_CACHE: '',
    HF_TOKEN: '',
    HF_TOKEN_PATH: '',
    HF_HUB_OFFLINE: '',
  });

  before(async () => {
    hub = await TestHub.start({ repos: testRepos(), tokens: [TOKEN] });
    mkdirSync(hfHome, { recursive: true });
  });
  after(() => hub.close());

  it('pulls a repo into $HF_HOME/hub and prints the snapshot directory', async () => {
    const run = await runLoom(['pull', 'acme/tiny-llm', '--no-fsync'], env());
    assert.equal(run.code, 0, run.stderr);
    const dir = join(hfHome, 'hub', 'models--acme--tiny-llm', 'snapshots', MAIN);
    assert.equal(run.stdout, `${dir}\n`);
    for (const file of mainFiles) assert.ok(readFileSync(join(dir, file.path)).equals(file.bytes), file.path);
    assert.match(run.stderr, /7 files, .* 7 downloaded/);
  });

  it('without a terminal, the progress line leaves the Hub\'s 429 waits out of the rate (no "0 B/s")', async () => {
    hub.rateLimit = { remaining: 3, retryAfterSeconds: 2 };
    try {
      const home = join(root, 'hf-home-rate');
      const run = await runLoom(['pull', 'acme/tiny-llm', '--no-fsync'], { ...env(), HF_HOME: home });
      assert.equal(run.code, 0, run.stderr);
      const progress = run.stderr.split('\n').filter((line) => /^loom: \d+\/\d+ files, /.test(line));
      assert.ok(progress.length > 0, `a progress line after the waits: ${run.stderr}`);
      for (const line of progress) assert.doesNotMatch(line, /\b0 B\/s/, line);
    } finally {
      hub.rateLimit = { remaining: 0, retryAfterSeconds: 0 };
    }
  });

  it("takes loom fetch's --progress, --retries and --stall-timeout, with their checks", async () => {
    hub.rateLimit = { remaining: 3, retryAfterSeconds: 2 };
    try {
      const quiet = await runLoom(
        ['pull', 'acme/tiny-llm', '--no-fsync', '--progress', 'none', '--retries', '5', '--stall-timeout', '10'],
        { ...env(), HF_HOME: join(root, 'hf-home-flags') },
      );
      assert.equal(quiet.code, 0, quiet.stderr);
      assert.doesNotMatch(quiet.stderr, /^loom: \d+\/\d+ files, /m, 'no progress line with --progress none');
    } finally {
      hub.rateLimit = { remaining: 0, retryAfterSeconds: 0 };
    }
    const bad = await runLoom(['pull', 'acme/tiny-llm', '--progress', 'sideways'], env());
    assert.equal(bad.code, EXIT.usage);
    assert.match(bad.stderr, /--progress/);
  });

  it('finds the token in the file the hf CLI writes ($HF_HOME/token), and in HF_TOKEN_PATH', async () => {
    const denied = await runLoom(['pull', 'acme/gated-llm'], env());
    assert.equal(denied.code, EXIT.usage);
    assert.match(denied.stderr, /^loom: error: acme\/gated-llm is a gated repo and no token was given; /);
    assert.equal(denied.stderr.trim().split('\n').length, 1, 'one line');

    writeFileSync(join(hfHome, 'token'), `${TOKEN}\n`);
    hub.resetStats();
    const granted = await runLoom(['pull', 'acme/gated-llm', '--json'], env());
    assert.equal(granted.code, 0, granted.stderr);
    assert.equal(JSON.parse(granted.stdout).files.length, 1);
    assert.equal(hub.stats.cdnAuthorizationHeaders, 0);

    const tokenFile = join(root, 'elsewhere-token');
    writeFileSync(tokenFile, TOKEN);
    writeFileSync(join(hfHome, 'token'), 'hf_not_this_one');
    const viaPath = await runLoom(['pull', 'acme/gated-llm', '--hf-cache', join(root, 'c2')], {
      ...env(),
      HF_TOKEN_PATH: tokenFile,
    });
    assert.equal(viaPath.code, 0, viaPath.stderr);
    // One file reads as one.
    assert.match(viaPath.stderr, /\): 1 file, /);
    const refused = await runLoom(['pull', 'acme/gated-llm', '--hf-cache', join(root, 'c3')], env());
    assert.equal(refused.code, EXIT.usage);
    assert.match(refused.stderr, /^loom: error: the Hub refused the token \(HTTP 401\)/);
    writeFileSync(join(hfHome, 'token'), TOKEN);
  });

  it("reports the Hub's errors as one line with their exit codes", async () => {
    const cases: { args: string[]; code: number; line: RegExp }[] = [
      { args: ['pull', 'acme/nope'], code: EXIT.usage, line: /repository model acme\/nope not found on the Hub/ },
      { args: ['pull', 'acme/tiny-llm@nope'], code: EXIT.usage, line: /revision "nope" not found in acme\/tiny-llm/ },
      {
        args: ['fetch', 'hf://acme/tiny-llm/missing.bin', '-o', join(root, 'missing.bin')],
        code: EXIT.usage,
        line: /missing\.bin not found in hf:\/\/acme\/tiny-llm@main\/missing\.bin/,
      },
      { args: ['pull', 'not a repo'], code: EXIT.usage, line: /is not a Hugging Face repo or file/ },
    ];
    for (const c of cases) {
      const run = await runLoom(c.args, env());
      assert.equal(run.code, c.code, `${c.args.join(' ')}: ${run.stderr}`);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, c.line);
    }
    hub.rateLimit = { remaining: 1, retryAfterSeconds: 3600 };
    const limited = await runLoom(['pull', 'acme/tiny-llm', '--json'], env());
    hub.rateLimit = { remaining: 0, retryAfterSeconds: 0 };
    assert.equal(limited.code, EXIT.network);
    assert.equal(JSON.parse(limited.stdout).error.code, 'LOOM_ERR_HUB_RATE_LIMITED');
  });

  it('fetches one file with loom fetch hf://org/repo[@rev]/path, verified, token kept off the CDN', async () => {
    hub.resetStats();
    const out = join(root, 'weights.safetensors');
    const lfs = mainFiles[0]!;
    const run = await runLoom(['fetch', `hf://acme/tiny-llm/${lfs.path}`, '-o', out, '--json'], {
      ...env(),
      HF_TOKEN: TOKEN,
      LOOM_CACHE_DIR: join(root, 'fetch-cache'),
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).sha256, sha256Hex(lfs.bytes));
    assert.equal(JSON.parse(run.stdout).hubCheck, 'sha256');
    assert.equal(sha256Of(readFileSync(out)), sha256Hex(lfs.bytes));
    assert.equal(hub.stats.cdnAuthorizationHeaders, 0);
    assert.ok(hub.stats.cdnRequests > 0);

    const config = join(root, 'config-v1.json');
    const small = await runLoom(['fetch', 'hf://acme/tiny-llm@v1/config.json', '-o', config], env());
    assert.equal(small.code, 0, small.stderr);
    // The summary names the check made (it said "not checked: no --sha256").
    assert.match(small.stderr, /git blob sha1 matches the Hub's/);
    assert.doesNotMatch(small.stderr, /not checked/);
    assert.ok(readFileSync(config).equals(v1Files[1]!.bytes));
  });

  it('with HF_HUB_OFFLINE=1 serves a pulled repo and file from the HF cache without asking the Hub', async () => {
    hub.resetStats();
    const out = join(root, 'offline-out');
    const pull = await runLoom(['pull', 'acme/tiny-llm', '--out', out], { ...env(), HF_HUB_OFFLINE: '1' });
    assert.equal(pull.code, 0, pull.stderr);
    for (const file of mainFiles) assert.ok(readFileSync(join(out, file.path)).equals(file.bytes), file.path);
    const one = join(root, 'offline-config.json');
    const fetch = await runLoom(['fetch', 'hf://acme/tiny-llm/config.json', '-o', one], {
      ...env(),
      HF_HUB_OFFLINE: '1',
    });
    assert.equal(fetch.code, 0, fetch.stderr);
    assert.ok(readFileSync(one).equals(mainFiles[3]!.bytes));
    // Again, onto the link the first run left: renaming a link over a link to the same file
    // does nothing (POSIX), which must not leave the temporary link behind.
    const again = await runLoom(['fetch', 'hf://acme/tiny-llm/config.json', '-o', one], {
      ...env(),
      HF_HUB_OFFLINE: '1',
    });
    assert.equal(again.code, 0, again.stderr);
    assert.ok(readFileSync(one).equals(mainFiles[3]!.bytes));
    assert.deepEqual(
      readdirSync(root).filter((f) => f.includes('.loom-')),
      [],
      'no temporary link left',
    );
    assert.deepEqual(hub.stats.hubRequests, {});
    const missing = await runLoom(['pull', 'acme/corpus', '--repo-type', 'dataset'], { ...env(), HF_HUB_OFFLINE: '1' });
    assert.equal(missing.code, EXIT.network);
    assert.match(missing.stderr, /HF_HUB_OFFLINE is set and hf:\/\/datasets\/acme\/corpus@main is not in/);
  });
});
