// What cannot work is said before the download, not after it: an output folder that is
// missing or read-only, and cache commands on a cache root that does not exist (nothing is
// created) or cannot exist (an answer at once, not a spin).
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { randomContent, runLoom, sha256OfFile, tempDir } from '../helpers/fixtures.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

const dir = tempDir();
const content = randomContent(2 * 1024 * 1024);
let server: OriginServer;
after(() => server.close());

async function origin(): Promise<OriginServer> {
  server ??= await new OriginServer().listen();
  server.setFile('/model.bin', content.bytes);
  server.resetStats();
  return server;
}

describe('loom fetch fails before the download', () => {
  it('reports a missing output folder with exit 5 before any request, with the cache on', async () => {
    const origin_ = await origin();
    const cacheDir = tempDir('loom-cache-');
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', join(dir, 'no', 'such', 'f.bin')], {
      LOOM_CACHE_DIR: cacheDir,
    });
    assert.equal(run.code, 5, run.stderr);
    assert.match(run.stderr, /^loom: error: directory does not exist while checking the output folder .*\/no\/such/);
    assert.doesNotMatch(run.stderr, /cache unusable/);
    assert.equal(origin_.requests.length, 0, 'nothing was asked of the origin');
    assert.deepEqual(readdirSync(join(cacheDir)), [], 'nothing was cached either');
  });

  it('reports a read-only output folder with exit 5 before any request, with the cache on', async () => {
    const origin_ = await origin();
    const readOnly = mountTmpfs(1024 * 1024, { readOnly: true });
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', join(readOnly, 'f.bin')]);
    assert.equal(run.code, 5, run.stderr);
    assert.match(run.stderr, /read-only file system while checking the output folder/);
    assert.equal(origin_.requests.length, 0);
  });

  it('still downloads into a folder that exists and is writable', async () => {
    const origin_ = await origin();
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', join(dir, 'ok.bin'), '-q']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(join(dir, 'ok.bin')), content.sha256);
  });

  it('downloads straight to --out, at once, when --cache-dir cannot be created', { timeout: 30_000 }, async () => {
    const origin_ = await origin();
    const out = join(dir, 'proc.bin');
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', out, '--cache-dir', '/proc/nope']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /cache unusable \(cache root \/proc\/nope cannot be created/);
    assert.equal(await sha256OfFile(out), content.sha256);
  });
});

describe('loom cache on a bad cache root', () => {
  it('ls on a root that does not exist says so and creates nothing', async () => {
    const root = join(tempDir(), 'not', 'yet');
    const run = await runLoom(['cache', 'ls', '--cache-dir', root]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `no cache at ${root} (it does not exist; nothing has been cached there)\n`);
    assert.equal(existsSync(join(root, '..')), false, 'not even its parent was created');
    const json = await runLoom(['cache', 'ls', '--cache-dir', root, '--json']);
    assert.deepEqual(JSON.parse(json.stdout), { ok: true, root, exists: false, blobs: [], totalBytes: 0 });
    assert.equal(existsSync(root), false);
  });

  it('verify and gc on a missing root have nothing to do; rm finds nothing (exit 2)', async () => {
    const root = join(tempDir(), 'missing');
    const verify = await runLoom(['cache', 'verify', '--cache-dir', root]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stderr, /no cache at .*: nothing to verify/);
    const gc = await runLoom(['cache', 'gc', '--max-size', '1GiB', '--cache-dir', root]);
    assert.equal(gc.code, 0, gc.stderr);
    const rm = await runLoom(['cache', 'rm', 'a'.repeat(64), '--cache-dir', root]);
    assert.equal(rm.code, 2, rm.stderr);
    assert.equal(existsSync(root), false);
  });

  for (const command of [['ls'], ['verify'], ['gc', '--max-size', '1GiB'], ['rm', 'abcd']]) {
    // Without the fix this spun at full CPU forever: the timeout turns that into a failure.
    it(`cache ${command[0]} --cache-dir /proc/nope fails at once with exit 6`, { timeout: 30_000 }, async () => {
      const run = await runLoom(['cache', ...command, '--cache-dir', '/proc/nope']);
      assert.equal(run.code, 6, run.stderr);
      assert.match(run.stderr, /^loom: error: cache root \/proc\/nope cannot be created: /);
    });
  }
});
