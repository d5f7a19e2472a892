// A second `loom pull` of an unchanged repo, as a user runs it (the built binary): nothing
// from the Hub or its CDN, and no file read again, whether it goes to the same HF cache
// (files already there), to a new one (a new container sharing the node's cache) or to
// --out. What the node cache recorded of each blob (inode, size, mtime, ctime) must still be
// what is on disk after a pull, else the next hit rehashes it; and each process's bytes read
// (/proc/self/io, written at exit by a preloaded module) must stay below one file's size.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { blobPath, cacheLayout } from '../../src/cache/cache-root.js';
import { runLoom, tempDir } from '../helpers/fixtures.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import { TestHub, commitHash, gitBlobSha1, type TestHubFile } from '../support/test-hub.js';
import { TOKEN } from './fixtures.js';

const MiB = 1024 * 1024;
const files: TestHubFile[] = [
  { path: 'model-00001-of-00002.safetensors', bytes: randomBytes(8 * MiB) },
  { path: 'model-00002-of-00002.safetensors', bytes: randomBytes(8 * MiB) },
  // A large file kept out of LFS: named and checked by its git blob sha1, served by the Hub.
  { path: 'tokenizer.model', bytes: randomBytes(4 * MiB), lfs: false },
  { path: 'config.json', bytes: Buffer.from('{"model_type":"llama","hidden_size":64}\n') },
  { path: 'nested/generation_config.json', bytes: Buffer.from('{"do_sample":false}\n') },
];
const SMALLEST_CHECKED = 4 * MiB;
const lfsBytes = files.filter((f) => f.lfs !== false && f.bytes.length >= 1024).reduce((s, f) => s + f.bytes.length, 0);
const hubBytes = files.filter((f) => f.lfs === false || f.bytes.length < 1024).reduce((s, f) => s + f.bytes.length, 0);
const COMMIT = commitHash('second-pull main');

describe('a second loom pull of an unchanged repo', () => {
  let hub: TestHub;
  const root = tempDir('loom-second-pull-');
  const nodeCache = join(root, 'node-cache');
  const ioReporter = join(root, 'io-report.mjs');
  let runs = 0;

  before(async () => {
    hub = await TestHub.start({
      repos: [{ id: 'acme/second', commits: [{ sha: COMMIT, files }] }],
      tokens: [TOKEN],
    });
    writeFileSync(
      ioReporter,
      [
        "import { readFileSync, writeFileSync } from 'node:fs';",
        "process.on('exit', () => writeFileSync(process.env.LOOM_TEST_IO_REPORT, readFileSync('/proc/self/io')));",
      ].join('\n'),
    );
  });
  after(() => hub.close());

  /** `loom pull` with its outcomes, the Hub's bytes, and the bytes the process read. */
  async function pull(hfHome: string, extra: string[] = []) {
    const report = join(root, `io-${++runs}.txt`);
    hub.resetStats();
    const run = await runLoom(['pull', 'acme/second', '--json', '--no-fsync', ...extra], {
      HF_ENDPOINT: hub.endpoint,
      HF_HOME: hfHome,
      HF_HUB_CACHE: '',
      HF_TOKEN: TOKEN,
      HF_HUB_OFFLINE: '',
      LOOM_CACHE_DIR: nodeCache,
      LOOM_TEST_IO_REPORT: report,
      NODE_OPTIONS: `--import=${pathToFileURL(ioReporter).href}`,
    });
    assert.equal(run.code, 0, run.stderr);
    const summary = JSON.parse(run.stdout) as { files: { path: string; outcome: string }[]; transferredBytes: number };
    const readBytes = Number(/^rchar: (\d+)$/m.exec(readFileSync(report, 'utf8'))![1]);
    return {
      outcomes: [...new Set(summary.files.map((f) => f.outcome))],
      transferredBytes: summary.transferredBytes,
      hubBytes: hub.stats.cdnBytes + hub.stats.hubFileBytes,
      readBytes,
    };
  }

  /** Blobs whose node-cache record (hint and index stamp) is not what is on disk: the next hit would rehash them. */
  function staleRecords(): string[] {
    const layout = cacheLayout(nodeCache);
    const stale: string[] = [];
    for (const name of readdirSync(layout.hints)) {
      const hint = JSON.parse(readFileSync(join(layout.hints, name), 'utf8')) as {
        key: string;
        digest: string;
        stamp: { ino: number; size: number; mtimeMs: number; ctimeMs: number };
      };
      const now = statSync(blobPath(layout, hint.digest));
      const { ino, size, mtimeMs, ctimeMs } = hint.stamp;
      if (now.ino !== ino || now.size !== size || now.mtimeMs !== mtimeMs || now.ctimeMs !== ctimeMs) {
        stale.push(hint.key.replace(/#.*/, '').split('/').pop()!);
      }
    }
    return stale.sort();
  }

  it('takes nothing from the Hub and reads no file again: same HF cache, a new one, --out', async () => {
    const first = await pull(join(root, 'hf-a'));
    assert.deepEqual(first.outcomes, ['miss']);
    assert.equal(first.hubBytes, lfsBytes + hubBytes);
    assert.equal(readdirSync(join(nodeCache, 'hints')).length, files.length);
    assert.deepEqual(staleRecords(), [], 'the node cache recorded each blob as the pull left it');

    // A new container: its own HF cache, the node's cache shared. Every file a hit, none read.
    const fresh = await pull(join(root, 'hf-b'));
    assert.deepEqual(fresh.outcomes, ['hit']);
    assert.equal(fresh.hubBytes, 0);
    assert.equal(fresh.transferredBytes, 0);
    assert.ok(fresh.readBytes < SMALLEST_CHECKED, `the pull read ${fresh.readBytes} bytes`);
    assert.deepEqual(staleRecords(), []);

    // The same HF cache again: every file already there.
    const again = await pull(join(root, 'hf-a'));
    assert.deepEqual(again.outcomes, ['present']);
    assert.equal(again.hubBytes, 0);
    assert.ok(again.readBytes < SMALLEST_CHECKED, `the pull read ${again.readBytes} bytes`);

    // Plain files, twice.
    const out = join(root, 'out');
    for (const round of [1, 2]) {
      const plain = await pull(join(root, 'hf-a'), ['--out', out]);
      assert.deepEqual(plain.outcomes, ['hit'], `--out round ${round}`);
      assert.equal(plain.hubBytes, 0);
      assert.ok(plain.readBytes < SMALLEST_CHECKED, `--out round ${round}: the pull read ${plain.readBytes} bytes`);
      assert.deepEqual(staleRecords(), [], `--out round ${round}`);
      for (const file of files) assert.ok(readFileSync(join(out, file.path)).equals(file.bytes), file.path);
    }
    // Every file exact through both snapshots, and nothing half-written left beside the blobs.
    for (const hf of ['hf-a', 'hf-b']) {
      const repo = join(root, hf, 'hub', 'models--acme--second');
      for (const file of files) {
        assert.ok(readFileSync(join(repo, 'snapshots', COMMIT, file.path)).equals(file.bytes), file.path);
      }
      assert.deepEqual(
        readdirSync(join(repo, 'blobs')).filter((n) => n.includes('.')),
        [],
      );
    }
    assert.ok(existsSync(join(root, 'hf-b', 'hub', 'models--acme--second', 'blobs', gitBlobSha1(files[2]!.bytes))));
  });

  it('--out on another file system: a second pull keeps the copies in place; a copy changed since is replaced', async () => {
    // The node cache is on the test's file system; --out on a tmpfs of its own: copies.
    const disk = mountTmpfs(64 * MiB);
    assert.notEqual(statSync(disk).dev, statSync(root).dev);
    const out = join(disk, 'out');
    await pull(join(root, 'hf-c'), ['--out', out]);
    const inodes = () => files.map((f) => statSync(join(out, f.path)).ino);
    const placed = inodes();

    const second = await pull(join(root, 'hf-c'), ['--out', out]);
    assert.deepEqual(second.outcomes, ['hit']);
    assert.equal(second.hubBytes, 0);
    assert.deepEqual(inodes(), placed, 'no file copied again');
    assert.ok(second.readBytes < SMALLEST_CHECKED, `the pull read ${second.readBytes} bytes`);

    // A copy written to since (its mtime put back, as a careful editor might) and one touched.
    const changed = join(out, files[0]!.path);
    const before = statSync(changed);
    const fd = openSync(changed, 'r+');
    writeSync(fd, Buffer.from([files[0]!.bytes[4096]! ^ 0xff]), 0, 1, 4096);
    closeSync(fd);
    utimesSync(changed, before.atime, before.mtime);
    const touched = join(out, files[1]!.path);
    utimesSync(touched, new Date(), new Date());
    const third = await pull(join(root, 'hf-c'), ['--out', out]);
    assert.deepEqual(third.outcomes, ['hit']);
    const now = inodes();
    assert.notEqual(now[0], placed[0], 'the changed copy is replaced');
    assert.notEqual(now[1], placed[1], 'the touched copy is replaced');
    assert.deepEqual(now.slice(2), placed.slice(2), 'the others are kept');
    for (const file of files) assert.ok(readFileSync(join(out, file.path)).equals(file.bytes), file.path);
    assert.deepEqual(
      readdirSync(out).filter((n) => n.includes('.loom')),
      [],
    );

    // One record per copy in the node cache; gc drops the record of a copy that is gone.
    const copies = join(nodeCache, 'copies');
    const recordOf = (path: string) => `${createHash('sha256').update(path).digest('hex').slice(0, 32)}.json`;
    assert.deepEqual(readdirSync(copies).sort(), files.map((f) => recordOf(join(out, f.path))).sort());
    rmSync(join(out, files[2]!.path));
    const gc = await runLoom(['cache', 'gc', '--max-size', '1TiB', '--json'], { LOOM_CACHE_DIR: nodeCache });
    assert.equal(gc.code, 0, gc.stderr);
    const report = JSON.parse(gc.stdout) as { removedLeftovers: string[]; evicted: unknown[] };
    assert.deepEqual(report.removedLeftovers, [`copies/${recordOf(join(out, files[2]!.path))}`]);
    assert.deepEqual(report.evicted, []);
    assert.equal(readdirSync(copies).length, files.length - 1);
  });
});
