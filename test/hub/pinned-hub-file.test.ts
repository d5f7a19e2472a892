// `loom fetch hf://… --sha256`: the Hub's own sha256 of an LFS file stays the file's identity
// when the caller pins one too. Bytes that miss it are damaged and kept nowhere, not in the
// node cache as "what the URL serves" (where a later fetch of the same resolve URL would be
// served them as a hit, the Hub confirming the ETag); a pin the Hub's digest contradicts
// fails before any byte moves.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXIT } from '../../src/core/errors.js';
import { runLoom, sha256Of, tempDir } from '../helpers/fixtures.js';
import { TestHub } from '../support/test-hub.js';
import { MAIN, TOKEN, mainFiles, testRepos } from './fixtures.js';

const file = mainFiles.find((f) => f.path === 'model-00001-of-00002.safetensors')!;
const hubSha256 = sha256Of(file.bytes);

describe('loom fetch hf://… --sha256 of an LFS file', () => {
  let hub: TestHub;
  const root = tempDir('loom-pinned-hub-');
  const nodeCache = join(root, 'node-cache');
  const env = (): NodeJS.ProcessEnv => ({
    HF_ENDPOINT: hub.endpoint,
    HF_HOME: join(root, 'hf'),
    HF_HUB_CACHE: '',
    HF_TOKEN: TOKEN,
    HF_HUB_OFFLINE: '',
    LOOM_CACHE_DIR: nodeCache,
  });
  const uri = `hf://acme/tiny-llm/${file.path}`;

  before(async () => {
    hub = await TestHub.start({ repos: testRepos(), tokens: [TOKEN] });
  });
  after(() => hub.close());

  it("pinned to the Hub's digest: damaged bytes are kept nowhere, and the resolve URL is not then served them", async () => {
    const out = join(root, 'damaged.bin');
    hub.corrupt.add(hubSha256);
    try {
      const bad = await runLoom(['fetch', uri, '-o', out, '--sha256', hubSha256], env());
      assert.equal(bad.code, EXIT.integrity, bad.stderr);
      assert.match(bad.stderr, new RegExp(`expected ${hubSha256}`));
    } finally {
      hub.corrupt.delete(hubSha256);
    }
    assert.equal(existsSync(out), false);
    assert.deepEqual(readdirSync(join(nodeCache, 'blobs', 'sha256')), [], 'no blob in the node cache');
    assert.deepEqual(readdirSync(join(nodeCache, 'hints')), [], 'no index row (its hint) in the node cache');

    // The same resolve URL with the same token, fetched as a plain URL: the Hub's bytes.
    const direct = join(root, 'direct.bin');
    const url = `${hub.endpoint}/acme/tiny-llm/resolve/${MAIN}/${file.path}`;
    const plain = await runLoom(['fetch', url, '-o', direct, '-H', `Authorization: Bearer ${TOKEN}`], env());
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(sha256Of(readFileSync(direct)), hubSha256);
  });

  it("pinned to another digest than the Hub's: fails before any byte moves, naming both", async () => {
    const out = join(root, 'other-pin.bin');
    const other = 'e'.repeat(64);
    hub.resetStats();
    const run = await runLoom(
      ['fetch', uri, '-o', out, '--sha256', other, '--cache-dir', join(root, 'other-cache')],
      env(),
    );
    assert.equal(run.code, EXIT.integrity, run.stderr);
    assert.match(run.stderr, new RegExp(`expected ${other}.*${hubSha256}`));
    assert.equal(hub.stats.cdnBytes, 0, 'nothing downloaded');
    assert.equal(existsSync(out), false);
  });

  it('a --sha256 that is not 64 hex digits is a usage error, as for any fetch', async () => {
    const run = await runLoom(['fetch', uri, '-o', join(root, 'bad-pin.bin'), '--sha256', 'xyz'], env());
    assert.equal(run.code, EXIT.usage, run.stderr);
    assert.match(run.stderr, /must be 64 hex digits/);
  });

  it("pinned to the Hub's digest, intact: lands exact", async () => {
    const out = join(root, 'intact.bin');
    const run = await runLoom(['fetch', uri, '-o', out, '--sha256', hubSha256], env());
    assert.equal(run.code, 0, run.stderr);
    assert.equal(sha256Of(readFileSync(out)), hubSha256);
  });
});
