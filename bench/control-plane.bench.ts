// Issue 4's scenario: locate requests per second and p99 latency with 10,000 live nodes and
// 1,000 blobs (20 holders each) registered, for the SQLite and the Redis store, driven by
// wrk from a second process over loopback.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RedisStore } from '../src/control-plane/redis-store.js';
import { SqliteStore } from '../src/control-plane/sqlite-store.js';
import { buildControlPlane, type RegistryStore } from '../src/index.js';
import { printTable, requireCommand, runChecked } from './lib.js';

const NODES = 10_000;
const BLOBS = 1_000;
const HOLDERS_PER_BLOB = 20;
const CONNECTIONS = Number(process.env.LOOM_BENCH_CONNECTIONS ?? 8);
const ZONES = ['zone-a', 'zone-b', 'zone-c', 'zone-d'];

async function seed(store: RegistryStore, digests: string[]): Promise<void> {
  const expiresAt = Date.now() + 3_600_000;
  const batch = async (jobs: Array<() => Promise<unknown>>): Promise<void> => {
    for (let i = 0; i < jobs.length; i += 500) await Promise.all(jobs.slice(i, i + 500).map((job) => job()));
  };
  await batch(
    Array.from(
      { length: NODES },
      (_, i) => () =>
        store.heartbeat(
          {
            id: `node-${i}`,
            url: `http://10.${i >> 8}.${i & 255}.1:7071`,
            zone: ZONES[i % ZONES.length],
            freeUploadSlots: i % 8,
            expiresAt,
            epoch: undefined,
          },
          Date.now(),
        ),
    ),
  );
  const replicas: Array<() => Promise<unknown>> = [];
  digests.forEach((digest, b) => {
    for (let h = 0; h < HOLDERS_PER_BLOB; h++) {
      const node = (b * 37 + h * 499) % NODES;
      replicas.push(() =>
        store.putReplica(
          {
            digest,
            nodeId: `node-${node}`,
            complete: h % 4 !== 0,
            pieces: h % 4 === 0 ? [0, 1, 2] : undefined,
            updatedAt: Date.now(),
          },
          Date.now(),
        ),
      );
    }
  });
  await batch(replicas);
}

function wrkScript(digests: string[]): string {
  return `
local digests = { ${digests.map((d) => `"${d}"`).join(', ')} }
local zones = { ${ZONES.map((z) => `"${z}"`).join(', ')} }
math.randomseed(42)
request = function()
  local d = digests[math.random(#digests)]
  local z = zones[math.random(#zones)]
  return wrk.format("GET", "/v1/blobs/" .. d .. "/peers?node=node-" .. math.random(0, ${NODES - 1}) .. "&zone=" .. z .. "&limit=8")
end
done = function(summary, latency, requests)
  io.write(string.format("LOOM_RESULT %d %d %d %d %f\\n", summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, latency:percentile(50), latency:percentile(99), summary.duration / 1e6))
end
`;
}

async function measure(kind: 'sqlite' | 'redis'): Promise<Record<string, string | number>> {
  const dir = mkdtempSync(join(tmpdir(), 'loom-cp-bench-'));
  const prefix = `loombench-${randomBytes(4).toString('hex')}`;
  const store: RegistryStore =
    kind === 'sqlite' ? new SqliteStore(join(dir, 'cp.db')) : new RedisStore({ url: 'redis://127.0.0.1:6379', prefix });
  for (let i = 0; i < 50; i++) {
    try {
      await store.ping();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const digests = Array.from({ length: BLOBS }, () => randomBytes(32).toString('hex'));
  const app = await buildControlPlane({ store, nodeTtlMs: 3_600_000 });
  try {
    await seed(store, digests);
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const script = join(dir, 'locate.lua');
    writeFileSync(script, wrkScript(digests));
    await runChecked('wrk', ['-t1', `-c${CONNECTIONS}`, '-d3s', '-s', script, url]); // warm-up
    const run = await runChecked('wrk', ['-t1', `-c${CONNECTIONS}`, '-d10s', '-s', script, url]);
    const match = /LOOM_RESULT (\d+) (\d+) (\d+) (\d+) ([\d.]+)/.exec(run.stdout);
    if (!match) throw new Error(`wrk printed no result: ${run.stdout}`);
    const [requests, errors, p50us, p99us, seconds] = match.slice(1).map(Number) as [
      number,
      number,
      number,
      number,
      number,
    ];
    return {
      store: kind,
      nodes: NODES,
      blobs: BLOBS,
      'locates/s': Math.round(requests / seconds),
      'p50 ms': (p50us / 1000).toFixed(2),
      'p99 ms': (p99us / 1000).toFixed(2),
      errors,
    };
  } finally {
    await app.close();
    if (store instanceof RedisStore) await store.dropAll();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function locateScenario(): Promise<Record<string, unknown>> {
  requireCommand('wrk', 'apt-get install wrk');
  const kinds = (process.env.LOOM_BENCH_STORES ?? 'sqlite,redis').split(',') as Array<'sqlite' | 'redis'>;
  const rows = [];
  for (const kind of kinds) rows.push(await measure(kind));
  printTable(`Locate: wrk -t1 -c${CONNECTIONS} -d10s, 10,000 nodes, 1,000 blobs x 20 holders, limit 8`, rows);
  return { rows };
}

export const controlPlaneScenarios = { 'control-plane-locate': () => locateScenario() };
