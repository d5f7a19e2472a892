// One pool for a whole pull: several multi-piece LFS files and small files through one
// budget of requests. Every file exact (sha256 through the snapshot), every byte fetched
// from the origin once (no double fetch from splits or retries), and never more requests
// open at the origin than the pool allows.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pullRepo, type PullProgress } from '../../src/hub/pull.js';
import { sha256Of, tempDir } from '../helpers/fixtures.js';
import { TestHub, commitHash, type TestHubFile } from '../support/test-hub.js';

const MiB = 1024 * 1024;
const WORKERS = 4;

const files: TestHubFile[] = [
  // Pieces are 16 MiB: these span 3, 2 and 2 pieces.
  { path: 'model-00001-of-00003.safetensors', bytes: randomBytes(33 * MiB + 123), lfs: true },
  { path: 'model-00002-of-00003.safetensors', bytes: randomBytes(20 * MiB), lfs: true },
  { path: 'model-00003-of-00003.safetensors', bytes: randomBytes(17 * MiB + 5), lfs: true },
  { path: 'tokenizer.model', bytes: randomBytes(300 * 1024), lfs: true },
  ...Array.from({ length: 8 }, (_, i) => ({
    path: i < 4 ? `config-${i}.json` : `extra/notes-${i}.txt`,
    bytes: randomBytes(200 + i * 50),
    lfs: false,
  })),
];
const lfsBytes = files.filter((f) => f.lfs).reduce((sum, f) => sum + f.bytes.length, 0);
const smallBytes = files.filter((f) => !f.lfs).reduce((sum, f) => sum + f.bytes.length, 0);

describe('loom pull: one pool of requests for the whole pull', () => {
  let hub: TestHub;
  const root = tempDir('loom-hf-pool-');

  before(async () => {
    hub = await TestHub.start({
      repos: [{ id: 'acme/sharded', commits: [{ sha: commitHash('sharded'), files }] }],
      // Slow enough per connection that, without a shared pool, the files' workers overlap.
      cdnBytesPerSecond: 20 * MiB,
    });
  });
  after(() => hub.close());

  it('fetches every byte once, every file exact, with at most the pool open at the origin', async () => {
    hub.resetStats();
    const progress: PullProgress[] = [];
    const result = await pullRepo({
      repo: 'acme/sharded',
      endpoint: hub.endpoint,
      env: {},
      hubCache: join(root, 'hf'),
      cacheDir: join(root, 'node'),
      fetch: { workers: WORKERS, chunkSize: '1MiB', fsync: false },
      onProgress: (p) => progress.push(structuredClone(p)),
    });
    for (const file of files) {
      assert.equal(sha256Of(readFileSync(join(result.dir, file.path))), sha256Of(file.bytes), file.path);
    }
    assert.ok(result.files.every((f) => f.outcome === 'miss'));
    // No byte twice: the CDN sent the LFS files once, the Hub the small ones once.
    assert.equal(hub.stats.cdnBytes, lfsBytes);
    assert.equal(hub.stats.hubFileBytes, smallBytes);
    assert.equal(result.transferredBytes, lfsBytes + smallBytes);
    // One pool: a slot per request, a worker's next request opened just before its current
    // one ends (two for a moment), whatever the number of files.
    assert.ok(hub.stats.peakFileRequests <= 2 * WORKERS, `${hub.stats.peakFileRequests} requests open at once`);
    assert.ok(hub.stats.peakFileRequests >= 2, 'the files shared the pool in parallel');
    // One progress for the pull, ending with everything in place.
    const last = progress.at(-1)!;
    assert.equal(last.filesDone, files.length);
    assert.equal(last.bytesDone, lfsBytes + smallBytes);
    assert.deepEqual(last.active, []);
    assert.ok(progress.every((p) => p.bytesTotal === lfsBytes + smallBytes && p.filesTotal === files.length));
  });
});
