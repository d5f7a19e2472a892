// A second pull of an unchanged repo is mostly process start-up, so it loads only what it
// uses: no commander (its flags parse with node:util), and none of the fetch engine (no
// file is missing), seen here as node:crypto, which only hashing and the engine load.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runLoom, tempDir } from '../helpers/fixtures.js';
import { TestHub } from '../support/test-hub.js';
import { MAIN, mainFiles, testRepos } from './fixtures.js';

describe('a second loom pull (CLI)', () => {
  let hub: TestHub;
  const root = tempDir('loom-hf-startup-');
  const env = (): NodeJS.ProcessEnv => ({
    HF_ENDPOINT: hub.endpoint,
    HF_HOME: join(root, 'hf-home'),
    HF_HUB_CACHE: '',
    HF_TOKEN: '',
    HF_TOKEN_PATH: '',
    HF_HUB_OFFLINE: '',
  });

  before(async () => {
    hub = await TestHub.start({ repos: testRepos() });
  });
  after(() => hub.close());

  it('loads neither commander nor the fetch engine, and transfers nothing', async () => {
    const first = await runLoom(['pull', 'acme/tiny-llm', '--no-fsync', '-q'], env());
    assert.equal(first.code, 0, first.stderr);

    // Preloaded into the CLI's process: at exit, the packages and built-in modules it loaded.
    const preload = join(root, 'record-modules.cjs');
    const record = join(root, 'modules.json');
    writeFileSync(
      preload,
      `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(record)}, JSON.stringify({
        files: Object.keys(require.cache),
        builtins: process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)),
      })));\n`,
    );
    hub.resetStats();
    const second = await runLoom(['pull', 'acme/tiny-llm', '--json'], {
      ...env(),
      NODE_OPTIONS: `--require ${preload}`,
    });
    assert.equal(second.code, 0, second.stderr);
    const summary = JSON.parse(second.stdout) as { commit: string; files: Array<{ path: string; outcome: string }> };
    assert.equal(summary.commit, MAIN);
    assert.deepEqual(
      summary.files.map((f) => f.outcome),
      mainFiles.map(() => 'present'),
    );
    assert.equal(hub.stats.cdnBytes + hub.stats.hubFileBytes, 0, 'nothing transferred');

    const loaded = JSON.parse(readFileSync(record, 'utf8')) as { files: string[]; builtins: string[] };
    assert.deepEqual(
      loaded.files.filter((f) => f.includes('node_modules')),
      [],
      'no package loaded (commander among them)',
    );
    assert.ok(!loaded.builtins.includes('crypto'), `node:crypto loaded: ${loaded.builtins.join(' ')}`);
  });
});
