// The cache never serves a wrong blob: a blob changed on disk through a hard-linked output
// is noticed by its stamp and replaced; a digest pinned by the caller holds after waiting
// for another process; an origin that refuses the caller is not answered from the cache;
// a copy fetched with credentials is not served to a caller without them.
import assert from 'node:assert/strict';
import { chmodSync, closeSync, existsSync, openSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fetchCached } from '../../src/index.js';
import { REHASH_NOTICE_BYTES } from '../../src/cache/blob-check.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';
import { cacheTestBed } from './cache-fixtures.js';

const SIZE = 3 * 1024 * 1024 + 11;
const content = randomContent(SIZE);
const dir = tempDir();
const { origin, freshCache } = cacheTestBed(content.bytes, dir);
const FAST = { workers: 2, chunkSize: '1MiB', retryBaseDelay: 5 } as const;

/** Writes `bytes` at `offset` through `path`, as root may even on a read-only file. */
function writeThrough(path: string, offset: number, bytes: Buffer): void {
  chmodSync(path, 0o644);
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

describe('blob stamps', () => {
  it('a blob changed through a hard-linked output is not served: the next fetch gets the origin bytes', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    const first = join(dir, 'stamp-1.bin');
    assert.equal((await fetchCached(url, first, { ...FAST, cacheDir })).materialization, 'hardlink');
    writeThrough(first, 1000, Buffer.from('not the origin bytes'));
    server.resetStats();

    const messages: string[] = [];
    const second = await fetchCached(url, join(dir, 'stamp-2.bin'), {
      ...FAST,
      cacheDir,
      onStatus: (m) => messages.push(m),
    });
    assert.equal(await sha256OfFile(join(dir, 'stamp-2.bin')), content.sha256);
    assert.equal(second.cache, 'miss');
    assert.ok(server.bytesServed >= SIZE, 'downloaded again');
    assert.match(messages.join('\n'), /changed on disk/);
    const blob = join(cacheDir, 'blobs', 'sha256', content.sha256);
    assert.equal(await sha256OfFile(blob), content.sha256, 'the new download replaced the damaged blob');
    assert.equal(statSync(blob).mode & 0o222, 0);

    // The replacement is recorded: the next fetch is a hit again, without a body byte.
    server.resetStats();
    const third = await fetchCached(url, join(dir, 'stamp-3.bin'), { ...FAST, cacheDir });
    assert.equal(third.cache, 'hit');
    assert.equal(server.bytesServed, 0);

    // Putting the mtime back after the write does not hide it (the ctime moved).
    const before = statSync(join(dir, 'stamp-3.bin'));
    writeThrough(join(dir, 'stamp-3.bin'), 5, Buffer.from('xx'));
    utimesSync(join(dir, 'stamp-3.bin'), before.atime, before.mtime);
    await fetchCached(url, join(dir, 'stamp-4.bin'), { ...FAST, cacheDir });
    assert.equal(await sha256OfFile(join(dir, 'stamp-4.bin')), content.sha256);
  });

  it('a blob whose stamp changed but whose bytes did not is rehashed, served and restamped', async () => {
    const server = await origin();
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    await fetchCached(url, join(dir, 'chmod-1.bin'), { ...FAST, cacheDir });
    chmodSync(join(cacheDir, 'blobs', 'sha256', content.sha256), 0o400);
    server.resetStats();
    const hit = await fetchCached(url, join(dir, 'chmod-2.bin'), { ...FAST, cacheDir });
    assert.equal(hit.cache, 'hit');
    assert.equal(server.bytesServed, 0);
    assert.equal(await sha256OfFile(join(dir, 'chmod-2.bin')), content.sha256);
  });

  it('deleting an output (a hard link to the blob) does not make the next hit rehash the blob', async () => {
    // Large enough that a rehash is said on the status line (REHASH_NOTICE_BYTES).
    const large = randomContent(REHASH_NOTICE_BYTES + 1);
    const server = await origin();
    server.setFile('/large.bin', large.bytes);
    const cacheDir = freshCache();
    const url = server.url('/large.bin');
    const fetchLarge = async (out: string): Promise<{ cache: string; said: string }> => {
      const messages: string[] = [];
      const result = await fetchCached(url, out, { ...FAST, cacheDir, onStatus: (m) => messages.push(m) });
      assert.equal(await sha256OfFile(out), large.sha256);
      return { cache: result.cache, said: messages.join('\n') };
    };
    for (let round = 1; round <= 3; round++) {
      const out = join(dir, `deleted-${round}.bin`);
      const { cache, said } = await fetchLarge(out);
      if (round > 1) {
        assert.equal(cache, 'hit');
        assert.doesNotMatch(said, /checking its sha256/, `round ${round}: ${said}`);
      }
      // As a container's output folder goes when its pod does: the link count (and ctime) move.
      rmSync(out);
    }
    assert.equal(server.bytesServed, large.bytes.length, 'one download');
    // A change that is not a link's (a chmod, the link count as recorded) is rehashed, and
    // says so: the line the rounds above did not print.
    await fetchLarge(join(dir, 'deleted-kept.bin'));
    chmodSync(join(cacheDir, 'blobs', 'sha256', large.sha256), 0o400);
    const { cache, said } = await fetchLarge(join(dir, 'deleted-chmod.bin'));
    assert.equal(cache, 'hit');
    assert.match(said, /changed on disk since it was recorded; checking its sha256/);
  });
});

describe('revalidation answers', () => {
  for (const status of [401, 403, 404, 410]) {
    it(`an origin answering ${status} is not served from the cache (offline still is)`, async () => {
      let refusing = false;
      const server = await origin({
        fault: () => (refusing ? { kind: 'status', status } : undefined),
      });
      const cacheDir = freshCache();
      const url = server.url('/model.bin');
      await fetchCached(url, join(dir, `r${status}-1.bin`), { ...FAST, cacheDir });
      refusing = true;
      const out = join(dir, `r${status}-2.bin`);
      await assert.rejects(fetchCached(url, out, { ...FAST, cacheDir }), new RegExp(`HTTP ${status}`));
      assert.equal(existsSync(out), false);
      const offline = await fetchCached(url, out, { ...FAST, cacheDir, offline: true });
      assert.equal(offline.cache, 'hit');
    });
  }

  it('an origin that cannot be reached (503) still leaves the cached copy in service', async () => {
    let failing = false;
    const server = await origin({ fault: () => (failing ? { kind: 'status', status: 503 } : undefined) });
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    await fetchCached(url, join(dir, 'r503-1.bin'), { ...FAST, cacheDir });
    failing = true;
    const served = await fetchCached(url, join(dir, 'r503-2.bin'), { ...FAST, cacheDir });
    assert.equal(served.cache, 'hit');
  });
});

describe('credentials', () => {
  it('a copy fetched with an Authorization header is not served to a caller without it', async () => {
    const token = 'Bearer s3cret';
    const server = await origin({
      fault: ({ headers }) => (headers.authorization === token ? undefined : { kind: 'status', status: 401 }),
    });
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    const withToken = { ...FAST, cacheDir, headers: { Authorization: token } };
    assert.equal((await fetchCached(url, join(dir, 'cred-1.bin'), withToken)).cache, 'miss');

    // Offline, and pinned to the digest: neither is a way around the origin's refusal.
    const out = join(dir, 'cred-2.bin');
    await assert.rejects(fetchCached(url, out, { ...FAST, cacheDir, offline: true }), /HTTP 401/);
    await assert.rejects(fetchCached(url, out, { ...FAST, cacheDir, sha256: content.sha256 }), /HTTP 401/);
    await assert.rejects(
      fetchCached(url, out, { ...FAST, cacheDir, offline: true, headers: { Authorization: 'Bearer other' } }),
      /HTTP 401/,
    );
    assert.equal(existsSync(out), false);

    server.resetStats();
    const again = await fetchCached(url, join(dir, 'cred-3.bin'), { ...withToken, offline: true });
    assert.equal(again.cache, 'hit', 'the same credentials get the copy');
    assert.equal(server.requests.length, 0);
  });
});
