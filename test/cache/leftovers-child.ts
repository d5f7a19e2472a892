// A process that leaves what a kill -9 leaves in a node cache, for the gc leftovers test:
// node --import tsx test/cache/leftovers-child.ts CACHE_DIR URL. It holds the lock of a
// source and has half-written its failure record (`locks/source-<hash>.failed.json.<pid>.tmp`,
// as writeFailure leaves it when killed before its rename) and a manifest's temp file, then
// downloads URL through a planner of its own (origin only, under the source's peer id):
// the planned download writes `tmp/<id>.part` and `tmp/<id>.pieces.json` until it is killed.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureLayout } from '../../src/cache/blob-store.js';
import type { DownloadPlanner } from '../../src/cache/download-planner.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { acquireSourceLock, keyHash, sourceFailurePath } from '../../src/cache/single-flight.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { fetchCached, sourceKey } from '../../src/index.js';

const [cacheDir, url] = process.argv.slice(2) as [string, string];
const layout = cacheLayout(cacheDir);
await ensureLayout(layout);
const failedKey = sourceKey('http://example.invalid/failed.bin');
const lock = await acquireSourceLock(layout, failedKey, { isDone: async () => false });
if (lock === 'done') throw new Error('unexpected');
writeFileSync(`${sourceFailurePath(layout, keyHash(failedKey))}.${process.pid}.tmp`, '{"pid":');
mkdirSync(join(cacheDir, 'manifests'), { recursive: true });
writeFileSync(join(cacheDir, 'manifests', `${'e'.repeat(64)}.json.${process.pid}.tmp`), '{"digest":');

const planner: DownloadPlanner = {
  knownDigest: async () => undefined,
  plan: async ({ url: planned, origin }) => ({
    id: sourceBlobId(sourceKey(planned)),
    expected: {},
    sources: [{ id: 'origin', kind: 'origin', source: origin, maxConcurrency: 2, preference: 1 }],
    sourceWaitMs: 0,
    replanOnFailure: false,
    verifiedAgainst: 'first-origin-fetch',
    started: () => undefined,
    pieceVerified: () => undefined,
    dropped: () => undefined,
    finished: async () => undefined,
    close: async () => undefined,
  }),
};
await fetchCached(url, join(cacheDir, '..', 'leftovers-out.bin'), {
  cacheDir,
  planner,
  workers: 2,
  chunkSize: '256KiB',
});
