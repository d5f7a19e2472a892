// `npm run demo`: Loom doing its job on this machine with its defaults, in under a minute.
// A local origin imitates an object store (50 ms to first byte, 25 MB/s per connection);
// Loom fetches a 128 MiB file with one connection and then with its defaults, serves it
// again from the cache, and asks a control plane which nodes hold it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../src/index.js';
import { OriginServer } from './origin/origin-server.js';
import { LOOM_BIN, MiB, runChecked } from './lib.js';
import { randomBytes } from 'node:crypto';

const SIZE = 128 * MiB;
const work = mkdtempSync(join(tmpdir(), 'loom-demo-'));
const env = { LOOM_CACHE_DIR: join(work, 'cache') };
const origin = await new OriginServer({ firstByteLatencyMs: 50, rateLimitBytesPerSecond: 25e6 }).listen();
origin.setFile('/org/model/model.safetensors', randomBytes(SIZE));
const url = origin.url('/org/model/model.safetensors');

interface Summary {
  seconds: number;
  mbPerSecond: number;
  cache: string;
  sha256: string;
  requests: number;
  materialization: string | null;
}
async function loom(args: string[]): Promise<Summary> {
  const run = await runChecked(LOOM_BIN, ['fetch', url, '--json', ...args], env);
  return JSON.parse(run.stdout) as Summary;
}

try {
  console.log(`Origin: ${url}\n  (object-store-like: 50 ms to first byte, 25 MB/s per connection; file: 128 MiB)\n`);

  const single = await loom(['-o', join(work, 'one-connection.bin'), '--workers', '1', '--no-cache']);
  console.log(
    `1. One connection, like a plain download:   ${single.seconds.toFixed(2)} s  (${single.mbPerSecond} MB/s)`,
  );

  const parallel = await loom(['-o', join(work, 'model.safetensors')]);
  console.log(
    `2. loom fetch, defaults (16 workers):        ${parallel.seconds.toFixed(2)} s  (${parallel.mbPerSecond} MB/s, ${parallel.requests} requests) -> ${(single.seconds / parallel.seconds).toFixed(1)}x faster`,
  );
  console.log(`   sha256 ${parallel.sha256}, stored in the node cache`);

  origin.resetStats();
  const hit = await loom(['-o', join(work, 'again-model.safetensors')]);
  console.log(
    `3. The same fetch again (another container): ${(hit.seconds * 1000).toFixed(0)} ms, cache ${hit.cache} by ${hit.materialization}; origin sent ${origin.bytesServed} body bytes`,
  );

  const store = new SqliteStore(join(work, 'control-plane.db'));
  const cp = await buildControlPlane({ store });
  const cpUrl = await cp.listen({ host: '127.0.0.1', port: 0 });
  const put = (path: string, body: unknown) =>
    fetch(`${cpUrl}${path}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  for (const [id, zone] of [
    ['gpu-node-1', 'us-east-1a'],
    ['gpu-node-2', 'us-east-1b'],
  ] as const) {
    await put(`/v1/nodes/${id}`, { url: `http://${id}:7071`, zone, freeUploadSlots: 4 });
    await put(`/v1/blobs/${parallel.sha256}/replicas/${id}`, { complete: true });
  }
  await put('/v1/sources', { key: url, digest: parallel.sha256 });
  const located = (await (
    await fetch(`${cpUrl}/v1/blobs/${parallel.sha256}/peers?node=gpu-node-3&zone=us-east-1b`)
  ).json()) as {
    peers: Array<{ id: string; zone: string }>;
  };
  console.log(
    `4. Control plane (${cpUrl}): a cold node in us-east-1b asks who holds the blob -> ${located.peers.map((p) => `${p.id} (${p.zone})`).join(', ')}`,
  );
  await cp.close();
  await store.close();
  console.log('\nDone. Run `npm test` for the test suite and `npm run bench` for the benchmarks.');
} finally {
  await origin.close();
  rmSync(work, { recursive: true, force: true });
}
