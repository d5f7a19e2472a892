// Hit hints: a hit is served from the hint without SQLite, a hint is trusted only when its
// blob is there at its size, and rm, gc and verify take hints away with their blobs.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { hintPath, readHint, writeHint } from '../../src/cache/hit-hints.js';
import { fetchCached, gcCache, openCache, removeFromCache, sourceKey, verifyCache } from '../../src/index.js';
import { randomContent, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';

const SIZE = 2 * 1024 * 1024 + 3;
const content = randomContent(SIZE);
const dir = tempDir();
const FAST = { workers: 2, chunkSize: '1MiB' } as const;

let server: OriginServer;
let counter = 0;
async function primedCache(): Promise<{ cacheDir: string; url: string; key: string }> {
  server ??= await new OriginServer().listen();
  const path = `/h${++counter}.bin`;
  server.setFile(path, content.bytes);
  const cacheDir = join(dir, `cache-${counter}`);
  mkdirSync(cacheDir);
  const url = server.url(path);
  const first = await fetchCached(url, join(dir, `prime-${counter}.bin`), { ...FAST, cacheDir });
  assert.equal(first.cache, 'miss');
  server.resetStats();
  return { cacheDir, url, key: sourceKey(url) };
}
after(() => server?.close());

describe('hit hints', () => {
  it('are written with the index row and serve a hit without opening SQLite', async () => {
    const { cacheDir, url, key } = await primedCache();
    const layout = cacheLayout(cacheDir);
    const hint = readHint(layout, key);
    assert.equal(hint?.digest, content.sha256);
    assert.equal(hint?.size, SIZE);
    // An index nobody can open: a hit from the hint does not notice.
    writeFileSync(layout.index, 'not a database');
    const out = join(dir, 'from-hint.bin');
    const hit = await fetchCached(url, out, { ...FAST, cacheDir });
    assert.equal(hit.cache, 'hit');
    assert.equal(server.bytesServed, 0);
    assert.equal(server.requests.length, 1, 'one conditional request');
    assert.equal(await sha256OfFile(out), content.sha256);
    await waitFor('the hit to close its connection', () => server.openConnections === 0);
    // Without the hint the index is needed; it is unusable, so the download goes straight to --out.
    rmSync(hintPath(layout, key));
    const messages: string[] = [];
    const direct = await fetchCached(url, join(dir, 'bypass.bin'), {
      ...FAST,
      cacheDir,
      onStatus: (m) => messages.push(m),
    });
    assert.equal(direct.cache, 'bypass');
    assert.match(messages.join('\n'), /cache unusable/);
    assert.equal(await sha256OfFile(join(dir, 'bypass.bin')), content.sha256);
  });

  it('are not trusted when the blob is gone or of another size', async () => {
    const { cacheDir, url, key } = await primedCache();
    const layout = cacheLayout(cacheDir);
    const hint = readHint(layout, key)!;
    writeHint(layout, { ...hint, size: hint.size + 1 });
    const served = await fetchCached(url, join(dir, 'size.bin'), { ...FAST, cacheDir });
    assert.equal(served.cache, 'hit', 'the index still knows the blob');
    assert.equal(readHint(layout, key)?.size, SIZE, 'and the hit put the hint right');

    const blob = join(layout.blobs, content.sha256);
    chmodSync(blob, 0o644);
    rmSync(blob);
    server.resetStats();
    const again = await fetchCached(url, join(dir, 'gone.bin'), { ...FAST, cacheDir });
    assert.equal(again.cache, 'miss');
    assert.equal(server.bytesServed, SIZE);
    assert.equal(await sha256OfFile(join(dir, 'gone.bin')), content.sha256);
  });

  it('go with their blob on rm, verify and gc, so the next fetch downloads', async () => {
    for (const operation of ['rm', 'verify', 'gc'] as const) {
      const { cacheDir, url, key } = await primedCache();
      const layout = cacheLayout(cacheDir);
      const cache = await openCache(cacheDir);
      try {
        if (operation === 'rm') await removeFromCache(cache, url);
        if (operation === 'gc') assert.equal((await gcCache(cache, 0)).evicted.length, 1);
        if (operation === 'verify') {
          const blob = join(layout.blobs, content.sha256);
          chmodSync(blob, 0o644);
          writeFileSync(blob, 'corrupted');
          assert.deepEqual((await verifyCache(cache)).corrupt, [content.sha256]);
        }
      } finally {
        cache.close();
      }
      assert.equal(existsSync(hintPath(layout, key)), false, `${operation} removes the hint`);
      const next = await fetchCached(url, join(dir, `after-${operation}.bin`), { ...FAST, cacheDir });
      assert.equal(next.cache, 'miss', operation);
      assert.equal(server.bytesServed, SIZE, operation);
    }
  });

  it('ignore a hint naming another key, which a hit through the index rewrites', async () => {
    const { cacheDir, url, key } = await primedCache();
    const layout = cacheLayout(cacheDir);
    const stored = JSON.parse(readFileSync(hintPath(layout, key), 'utf8')) as { key: string };
    writeFileSync(hintPath(layout, key), JSON.stringify({ ...stored, key: 'http://elsewhere/x' }));
    assert.equal(readHint(layout, key), undefined);
    const hit = await fetchCached(url, join(dir, 'other-key.bin'), { ...FAST, cacheDir, offline: true });
    assert.equal(hit.cache, 'hit');
    assert.equal(readHint(layout, key)?.key, key, 'the hit through the index rewrote the hint');
  });
});
