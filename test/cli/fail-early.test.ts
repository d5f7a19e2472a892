// What cannot work is said before the download, not after it: an output folder that is
// missing or read-only, and cache commands on a cache root that does not exist (nothing is
// created) or cannot exist (an answer at once, not a spin); server commands whose address or
// flags cannot work.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { randomContent, runLoom, sha256OfFile, tempDir } from '../helpers/fixtures.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

const dir = tempDir();
const content = randomContent(2 * 1024 * 1024);
let server: OriginServer;
after(() => server?.close());

async function origin(): Promise<OriginServer> {
  server ??= await new OriginServer().listen();
  server.setFile('/model.bin', content.bytes);
  server.resetStats();
  return server;
}

describe('loom fetch fails before the download', () => {
  it('creates missing folders of --out, as curl --create-dirs does, and fetches into them', async () => {
    const origin_ = await origin();
    const cacheDir = tempDir('loom-cache-');
    const out = join(dir, 'no', 'such', 'f.bin');
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', out, '--json'], { LOOM_CACHE_DIR: cacheDir });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(out), content.sha256);
    const summary = JSON.parse(run.stdout) as { cache: string; materialization: string };
    assert.equal(summary.cache, 'miss', 'the node cache was used');
    assert.equal(summary.materialization, 'hardlink');
  });

  it('reports an output folder that cannot be made with exit 5 before any request, with the cache on', async () => {
    const origin_ = await origin();
    const cacheDir = tempDir('loom-cache-');
    writeFileSync(join(dir, 'a-file'), 'x');
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', join(dir, 'a-file', 'sub', 'f.bin')], {
      LOOM_CACHE_DIR: cacheDir,
    });
    assert.equal(run.code, 5, run.stderr);
    assert.match(
      run.stderr,
      /^loom: error: a part of the path is not a directory while creating the output folder .*\/a-file\/sub/,
    );
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

  for (const command of [['ls'], ['verify'], ['gc', '--max-size', '1'], ['rm', 'abcd']]) {
    it(`cache ${command[0]} on a folder that is not a cache refuses (exit 6) and writes nothing there`, async () => {
      const root = tempDir('not-a-cache-');
      writeFileSync(join(root, 'mine.txt'), 'x\n');
      const run = await runLoom(['cache', ...command, '--cache-dir', root]);
      assert.equal(run.code, 6, run.stderr);
      assert.match(run.stderr, /is not a Loom cache: it holds other files \(mine\.txt\) and no index\.db/);
      assert.deepEqual(readdirSync(root), ['mine.txt']);
    });
  }

  it('fetch with a cache root that is not a cache downloads straight to --out and writes nothing there', async () => {
    const origin_ = await origin();
    const root = tempDir('not-a-cache-');
    writeFileSync(join(root, 'mine.txt'), 'x\n');
    const out = join(tempDir(), 'f.bin');
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', out, '--cache-dir', root]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /cache unusable \(.* is not a Loom cache: .*\); downloading straight to /);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.deepEqual(readdirSync(root), ['mine.txt']);
  });

  it('says a cache it bypasses with --json too (an init container logs stderr, its exit code is 0)', async () => {
    const origin_ = await origin();
    const root = tempDir('not-a-cache-');
    writeFileSync(join(root, 'mine.txt'), 'x\n');
    const out = join(tempDir(), 'f.bin');
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', out, '--cache-dir', root, '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stderr,
      /^loom: warning: cache unusable \(.* is not a Loom cache: .*\); downloading straight to /m,
    );
    assert.equal((JSON.parse(run.stdout) as { cache: string }).cache, 'bypass');
    assert.equal(await sha256OfFile(out), content.sha256);
  });

  it('a root with the layout an agent made and a foreign folder in it, no index.db yet, is still the cache', async () => {
    // `loom agent` makes blobs/sha256, tmp, locks and hints, not index.db; a pod that then
    // wrote an outputs/ folder into the root left it refused for good ("not a Loom cache").
    const origin_ = await origin();
    const root = tempDir('agent-cache-');
    for (const name of ['blobs/sha256', 'tmp', 'locks', 'hints', 'outputs'])
      mkdirSync(join(root, name), { recursive: true });
    const out = join(root, 'outputs', 'f.bin');
    const run = await runLoom(['fetch', origin_.url('/model.bin'), '-o', out, '--cache-dir', root, '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.doesNotMatch(run.stderr, /cache unusable/);
    assert.equal(await sha256OfFile(out), content.sha256);
    const summary = JSON.parse(run.stdout) as { cache: string; materialization: string };
    assert.deepEqual([summary.cache, summary.materialization], ['miss', 'hardlink']);
    assert.equal(existsSync(join(root, 'blobs', 'sha256', content.sha256)), true);
  });

  it('a folder that is not a cache is refused with what to do about it', async () => {
    const root = tempDir('not-a-cache-');
    mkdirSync(join(root, 'outputs'));
    mkdirSync(join(root, 'tmp'));
    const run = await runLoom(['cache', 'ls', '--cache-dir', root]);
    assert.equal(run.code, 6, run.stderr);
    assert.match(
      run.stderr,
      /holds other files \(outputs\) and no index\.db; .*move that out of it \(outputs go beside/,
    );
  });

  it("a volume's own root (only lost+found in it) is still a cache root", async () => {
    const root = tempDir('volume-cache-');
    mkdirSync(join(root, 'lost+found'));
    const run = await runLoom(['cache', 'ls', '--cache-dir', root]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `0 blobs, 0 B in ${root}\n`);
  });

  it('an empty folder is still a cache root: ls makes the layout and lists nothing', async () => {
    const root = tempDir('empty-cache-');
    const run = await runLoom(['cache', 'ls', '--cache-dir', root]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `0 blobs, 0 B in ${root}\n`);
    assert.ok(existsSync(join(root, 'index.db')));
  });

  it('a file as the cache root is "not a directory" (exit 6), for the file and for a path below it', async () => {
    const file = join(tempDir(), 'some.bin');
    writeFileSync(file, 'x');
    const run = await runLoom(['cache', 'ls', '--cache-dir', file]);
    assert.equal(run.code, 6, run.stderr);
    assert.match(run.stderr, /^loom: error: cache root .*some\.bin is not a directory/);
    const below = await runLoom(['cache', 'ls', '--cache-dir', join(file, 'x')]);
    assert.equal(below.code, 6, below.stderr);
    assert.match(below.stderr, /not a directory/);
    assert.doesNotMatch(below.stderr, /does not exist|create the directory/);
  });

  it('an empty --cache-dir or LOOM_CACHE_DIR is an error (exit 2), not the default cache', async () => {
    const home = tempDir('home-');
    const env = { HOME: home, XDG_CACHE_HOME: '' };
    const rm = await runLoom(['cache', 'rm', 'abcd', '--cache-dir', ''], env);
    assert.equal(rm.code, 2, rm.stderr);
    assert.match(rm.stderr, /^loom: error: --cache-dir is empty/);
    const ls = await runLoom(['cache', 'ls'], { ...env, LOOM_CACHE_DIR: '' });
    assert.equal(ls.code, 2, ls.stderr);
    assert.match(ls.stderr, /^loom: error: LOOM_CACHE_DIR is empty/);
    assert.deepEqual(readdirSync(home), [], 'nothing was made under HOME');
  });
});

describe('server commands that cannot start', () => {
  // Each run must end by itself: a store or server opened before the failure would keep the
  // process alive (the control plane's SQLite checkpoint thread did, after a bad --legacy-ttl).
  it(
    'loom control-plane and loom agent on a busy port exit 7 naming the address, and stop',
    { timeout: 30_000 },
    async () => {
      const blocker = createServer();
      await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
      after(() => blocker.close());
      const { port } = blocker.address() as AddressInfo;
      const cacheDir = join(dir, 'busy-cache');
      mkdirSync(cacheDir, { recursive: true });
      const plane = await runLoom(['control-plane', '--listen', `127.0.0.1:${port}`, '--cache-dir', cacheDir]);
      assert.equal(plane.code, 7, plane.stderr);
      assert.match(plane.stderr, new RegExp(`^loom: error: 127\\.0\\.0\\.1:${port} is already in use`));
      const agent = await runLoom([
        'agent',
        '--control-plane',
        'http://127.0.0.1:9',
        '--listen',
        `127.0.0.1:${port}`,
        '--cache-dir',
        cacheDir,
      ]);
      assert.equal(agent.code, 7, agent.stderr);
      assert.match(agent.stderr, new RegExp(`loom: error: 127\\.0\\.0\\.1:${port} is already in use`));
    },
  );

  it(
    'loom control-plane with a bad lifetime exits 2 at once, without opening its store',
    { timeout: 30_000 },
    async () => {
      const cacheDir = join(dir, 'ttl-cache');
      mkdirSync(cacheDir, { recursive: true });
      const run = await runLoom([
        'control-plane',
        '--partial-ttl',
        '0',
        '--listen',
        '127.0.0.1:0',
        '--cache-dir',
        cacheDir,
      ]);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, /^loom: error: --partial-ttl "0" must be longer than 0/);
      assert.deepEqual(readdirSync(cacheDir), [], 'no store file was made');
      // A node would expire before its next heartbeat.
      const short = await runLoom([
        'control-plane',
        '--node-ttl',
        '1ms',
        '--listen',
        '127.0.0.1:0',
        '--cache-dir',
        cacheDir,
      ]);
      assert.equal(short.code, 2, short.stderr);
      assert.match(short.stderr, /^loom: error: --node-ttl "1ms" is too short to work; give 1s or more/);
    },
  );
});
