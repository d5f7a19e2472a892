// A small (non-LFS) Hub file's git sha1 is checked before the bytes enter the node cache or
// reach their place: a corrupted one is kept nowhere (no blob, no index row, nothing in the
// HF cache, nothing at -o, no leftover beside it), through the node cache and when the cache
// cannot be used; a healthy one lands exact.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXIT } from '../../src/core/errors.js';
import { runLoom, tempDir } from '../helpers/fixtures.js';
import { TestHub, gitBlobSha1 } from '../support/test-hub.js';
import { TOKEN, mainFiles, testRepos } from './fixtures.js';

const config = mainFiles.find((f) => f.path === 'config.json')!;
const sha1 = gitBlobSha1(config.bytes);

describe("a small Hub file's git sha1, checked before it is kept anywhere", () => {
  let hub: TestHub;
  const root = tempDir('loom-small-check-');
  const env = (name: string): NodeJS.ProcessEnv => ({
    HF_ENDPOINT: hub.endpoint,
    HF_HOME: join(root, `hf-${name}`),
    HF_HUB_CACHE: '',
    HF_TOKEN: TOKEN,
    HF_HUB_OFFLINE: '',
    LOOM_CACHE_DIR: join(root, `node-${name}`),
  });

  before(async () => {
    hub = await TestHub.start({ repos: testRepos(), tokens: [TOKEN] });
  });
  after(() => hub.close());

  it('loom pull: a corrupted small file enters neither cache; the rerun downloads it and it is exact', async () => {
    hub.corrupt.add(sha1);
    try {
      const bad = await runLoom(['pull', 'acme/tiny-llm', '--include', 'config.json', '--no-fsync'], env('pull'));
      assert.equal(bad.code, EXIT.integrity, bad.stderr);
      assert.match(bad.stderr, new RegExp(`config.json: git sha1 [0-9a-f]{40} is not the ${sha1} the Hub gave`));
    } finally {
      hub.corrupt.delete(sha1);
    }
    const nodeCache = join(root, 'node-pull');
    assert.deepEqual(readdirSync(join(nodeCache, 'blobs', 'sha256')), [], 'no blob in the node cache');
    assert.deepEqual(readdirSync(join(nodeCache, 'hints')), [], 'no index row (its hint) in the node cache');
    const ls = await runLoom(['cache', 'ls', '--json'], { LOOM_CACHE_DIR: nodeCache });
    assert.equal((JSON.parse(ls.stdout) as { blobs: unknown[] }).blobs.length, 0, ls.stdout);
    const repo = join(root, 'hf-pull', 'hub', 'models--acme--tiny-llm');
    assert.deepEqual(readdirSync(join(repo, 'blobs')), []);
    assert.equal(existsSync(join(repo, 'snapshots')), false);

    hub.resetStats();
    const good = await runLoom(['pull', 'acme/tiny-llm', '--include', 'config.json', '--no-fsync'], env('pull'));
    assert.equal(good.code, 0, good.stderr);
    assert.equal(hub.stats.hubFileBytes, config.bytes.length);
    assert.ok(readFileSync(join(good.stdout.trim(), 'config.json')).equals(config.bytes));
  });

  it('loom fetch hf:// with an unusable cache: a corrupted small file leaves nothing at -o nor beside it', async () => {
    // A folder that is not a Loom cache: the fetch goes straight to -o.
    const notACache = join(root, 'not-a-cache');
    mkdirSync(notACache);
    writeFileSync(join(notACache, 'notes.txt'), 'mine\n');
    const outDir = join(root, 'fetch-out');
    mkdirSync(outDir);
    const out = join(outDir, 'config.json');
    const args = ['fetch', 'hf://acme/tiny-llm/config.json', '-o', out, '--cache-dir', notACache];
    hub.corrupt.add(sha1);
    try {
      const bad = await runLoom(args, env('fetch'));
      assert.equal(bad.code, EXIT.integrity, bad.stderr);
      assert.match(bad.stderr, /cache unusable/);
      assert.match(bad.stderr, new RegExp(`is not the ${sha1} the Hub gave`));
    } finally {
      hub.corrupt.delete(sha1);
    }
    assert.deepEqual(readdirSync(outDir), [], 'nothing at -o, nothing beside it');
    const good = await runLoom(args, env('fetch'));
    assert.equal(good.code, 0, good.stderr);
    assert.ok(readFileSync(out).equals(config.bytes));
    assert.deepEqual(readdirSync(outDir), ['config.json']);
    assert.deepEqual(readdirSync(notACache), ['notes.txt'], 'nothing written into the folder that is not a cache');
  });
});
