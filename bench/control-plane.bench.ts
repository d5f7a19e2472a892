// Locate under load that looks like a fleet: 10,000 live nodes heartbeating every 10 s
// during the run (1,000 PUTs a second from a process of their own), 1,000 blobs with 20
// holders each and one blob with 10,000 holders (a quarter of them partial, with piece
// lists). wrk drives locates from another process over loopback: a random ordinary blob
// ("spread") or the 10,000-holder blob ("hot"), a random asker and zone, limit 8. Both
// stores are seeded once and measured in interleaved rounds; the figures are medians.
// "noop" is the floor of this machine in the same rounds: wrk against a fastify route in the
// same process that answers a fixed body of the same size, with the store's heartbeats still
// coming in, so locates/s over noop's is the share of the load generator's rate the control
// plane's own work leaves. LOOM_BENCH_CPU_PROFILE=DIR writes a V8 CPU profile of the process
// per measured run (read them with bench/cpuprofile.ts).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { RedisStore } from '../src/control-plane/redis-store.js';
import { SqliteStore } from '../src/control-plane/sqlite-store.js';
import { buildControlPlane, type RegistryStore } from '../src/index.js';
import { ROOT, median, printTable, requireCommand, runChecked, type CommandRun } from './lib.js';

const NODES = 10_000;
const BLOBS = 1_000;
const HOLDERS_PER_BLOB = 20;
const HOT_HOLDERS = 10_000;
/** Pieces a partial holder of the hot blob has: a 100 GB blob has 746. */
const HOT_PARTIAL_PIECES = 400;
const HEARTBEAT_INTERVAL_MS = 10_000;
const CONNECTIONS = Number(process.env.LOOM_BENCH_CONNECTIONS ?? 8);
const ROUNDS = Number(process.env.LOOM_BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.LOOM_BENCH_SECONDS ?? 10);
const REDIS_URL = process.env.LOOM_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const ZONES = ['zone-a', 'zone-b', 'zone-c', 'zone-d'];
const LONG = 3_600_000;
const PROFILE_DIR = process.env.LOOM_BENCH_CPU_PROFILE;

type Kind = 'sqlite' | 'redis';
type Workload = 'spread' | 'hot' | 'noop';

interface Target {
  kind: Kind;
  store: RegistryStore;
  app: FastifyInstance;
  url: string;
}

async function batch(jobs: Array<() => Promise<unknown>>): Promise<void> {
  for (let i = 0; i < jobs.length; i += 500) await Promise.all(jobs.slice(i, i + 500).map((job) => job()));
}

async function seed(store: RegistryStore, digests: string[], hot: string): Promise<void> {
  const now = Date.now();
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
            expiresAt: now + LONG,
            epoch: undefined,
          },
          now,
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
  const partialPieces = Array.from({ length: HOT_PARTIAL_PIECES }, (_, i) => i * 2);
  for (let n = 0; n < HOT_HOLDERS; n++) {
    replicas.push(() =>
      store.putReplica(
        {
          digest: hot,
          nodeId: `node-${n}`,
          complete: n % 4 !== 0,
          pieces: n % 4 === 0 ? partialPieces : undefined,
          updatedAt: Date.now(),
        },
        Date.now(),
      ),
    );
  }
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

async function open(kind: Kind, dir: string, digests: string[], hot: string): Promise<Target> {
  const store: RegistryStore =
    kind === 'sqlite'
      ? new SqliteStore(join(dir, 'cp.db'))
      : new RedisStore({ url: REDIS_URL, prefix: `loombench-${randomBytes(4).toString('hex')}` });
  for (let i = 0; i < 50; i++) {
    try {
      await store.ping();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  // Long TTLs: the seeded nodes and partial replicas stay for the whole run; the
  // heartbeats during the measurement still do a heartbeat's full work.
  const app = await buildControlPlane({ store, nodeTtlMs: LONG, partialTtlMs: LONG });
  const started = Date.now();
  await seed(store, digests, hot);
  console.log(`seeded ${kind} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { kind, store, app, url };
}

/**
 * The floor: a fastify route with no hooks, validation or store that answers what a locate
 * of 8 complete holders answers (the same bytes every time).
 */
async function openNoop(): Promise<{ app: FastifyInstance; url: string }> {
  const body = JSON.stringify({
    digest: 'f'.repeat(64),
    peers: Array.from({ length: 8 }, (_, i) => ({
      id: `node-${1000 + i}`,
      url: `http://10.3.${232 + i}.1:7071`,
      zone: ZONES[i % ZONES.length],
      complete: true,
      pieces: null,
      freeUploadSlots: 7,
    })),
  });
  const app = Fastify({ logger: false });
  app.get('/v1/blobs/:digest/peers', (_request, reply) => {
    void reply.type('application/json; charset=utf-8').send(body);
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url };
}

async function close(target: Target): Promise<void> {
  await target.app.close();
  if (target.store instanceof RedisStore) await target.store.dropAll();
  await target.store.close();
}

/** Starts the heartbeat process against `url`; resolves once it beats. */
async function startHeartbeats(url: string): Promise<{ stop: () => Promise<string> }> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'bench', 'clients', 'heartbeats.ts'),
      url,
      String(NODES),
      String(HEARTBEAT_INTERVAL_MS),
      ZONES.join(','),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('LOOM_HEARTBEATS_RUNNING')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`the heartbeat process exited ${code}`)));
  });
  return {
    stop: () =>
      new Promise((resolve) => {
        child.removeAllListeners('exit');
        child.once('exit', () => resolve(out));
        child.kill('SIGTERM');
      }),
  };
}

/** Profiles this process (the control plane's) while `run` runs, into PROFILE_DIR/name. */
async function profiled<T>(name: string, run: () => Promise<T>): Promise<T> {
  if (!PROFILE_DIR) return run();
  const session = new Session();
  session.connect();
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
    const result = await run();
    const { profile } = await session.post('Profiler.stop');
    mkdirSync(PROFILE_DIR, { recursive: true });
    writeFileSync(join(PROFILE_DIR, `${name}.cpuprofile`), JSON.stringify(profile));
    return result;
  } finally {
    session.disconnect();
  }
}

async function measure(
  target: Target,
  workload: Workload,
  script: string,
  wrkUrl: string,
  round: number,
): Promise<Record<string, number>> {
  const heartbeats = await startHeartbeats(target.url);
  const loadBefore = loadavg()[0]!;
  let run: CommandRun;
  let beats: string;
  let cpu: NodeJS.CpuUsage;
  try {
    await runChecked('wrk', ['-t1', `-c${CONNECTIONS}`, '-d3s', '-s', script, wrkUrl]); // warm-up
    // The control plane runs in this process: its CPU per request does not depend on how
    // much of a core the machine's other work leaves it, as requests per second do.
    const cpuBefore = process.cpuUsage();
    run = await profiled(`${target.kind}-${workload}-${round + 1}`, () =>
      runChecked('wrk', ['-t1', `-c${CONNECTIONS}`, `-d${SECONDS}s`, '-s', script, wrkUrl]),
    );
    cpu = process.cpuUsage(cpuBefore);
  } finally {
    beats = await heartbeats.stop();
  }
  const match = /LOOM_RESULT (\d+) (\d+) (\d+) (\d+) ([\d.]+)/.exec(run.stdout);
  if (!match) throw new Error(`wrk printed no result: ${run.stdout}`);
  const [requests, errors, p50us, p99us, seconds] = match.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ];
  const hb = /LOOM_HEARTBEATS (\d+) (\d+) (\d+) (\d+) ([\d.]+)/.exec(beats);
  if (!hb) throw new Error(`the heartbeat process printed no result: ${beats}`);
  const [sent, ok, failed, hbP99us, hbSeconds] = hb.slice(1).map(Number) as [number, number, number, number, number];
  const heartbeatsPerSecond = ok / hbSeconds;
  const cpuPerRequestUs = (cpu.user + cpu.system) / (requests + heartbeatsPerSecond * seconds);
  const row = {
    locatesPerSecond: Math.round(requests / seconds),
    cpuPerRequestUs: Math.round(cpuPerRequestUs),
    p50ms: p50us / 1000,
    p99ms: p99us / 1000,
    errors,
    heartbeatsPerSecond: Math.round(heartbeatsPerSecond),
    heartbeatsFailed: failed,
    // Still queued in the client when it stopped: the control plane did not keep up.
    heartbeatsUnanswered: sent - ok - failed,
    heartbeatP99ms: hbP99us / 1000,
    load1: Number(((loadBefore + loadavg()[0]!) / 2).toFixed(2)),
  };
  console.log(`${target.kind} ${workload}: ${JSON.stringify(row)}`);
  return row;
}

export async function locateScenario(): Promise<Record<string, unknown>> {
  requireCommand('wrk', 'apt-get install wrk');
  const kinds = (process.env.LOOM_BENCH_STORES ?? 'sqlite,redis').split(',') as Kind[];
  const workloads = (process.env.LOOM_BENCH_WORKLOADS ?? 'spread,hot,noop').split(',') as Workload[];
  const dir = mkdtempSync(join(tmpdir(), 'loom-cp-bench-'));
  const digests = Array.from({ length: BLOBS }, () => randomBytes(32).toString('hex'));
  const hot = randomBytes(32).toString('hex');
  const scripts: Record<Workload, string> = {
    spread: join(dir, 'spread.lua'),
    hot: join(dir, 'hot.lua'),
    noop: join(dir, 'spread.lua'),
  };
  writeFileSync(scripts.spread, wrkScript(digests));
  writeFileSync(scripts.hot, wrkScript([hot]));
  const targets: Target[] = [];
  const samples = new Map<string, Array<Record<string, number>>>();
  const noop = workloads.includes('noop') ? await openNoop() : undefined;
  try {
    for (const kind of kinds) targets.push(await open(kind, dir, digests, hot));
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of targets) {
        for (const workload of workloads) {
          const key = `${target.kind} ${workload}`;
          const wrkUrl = workload === 'noop' ? noop!.url : target.url;
          const row = await measure(target, workload, scripts[workload], wrkUrl, round);
          samples.set(key, [...(samples.get(key) ?? []), row]);
        }
      }
    }
  } finally {
    await noop?.app.close();
    for (const target of targets) await close(target);
    rmSync(dir, { recursive: true, force: true });
  }
  const rows = [...samples].map(([key, runs]) => {
    const [store, workload] = key.split(' ') as [Kind, Workload];
    const med = (field: string): number => median(runs.map((r) => r[field]!));
    // Against the floor measured in the same round (the load changes between rounds).
    const floor = samples.get(`${store} noop`);
    const ofNoop = floor ? median(runs.map((r, i) => r.locatesPerSecond! / floor[i]!.locatesPerSecond!)) : undefined;
    return {
      store,
      workload,
      'locates/s': med('locatesPerSecond'),
      'of noop': ofNoop === undefined ? '' : ofNoop.toFixed(2),
      'p50 ms': med('p50ms').toFixed(2),
      'p99 ms': med('p99ms').toFixed(2),
      errors: runs.reduce((a, r) => a + r.errors! + r.heartbeatsFailed!, 0),
      'server CPU µs/req': med('cpuPerRequestUs'),
      'heartbeats/s': med('heartbeatsPerSecond'),
      'heartbeat p99 ms': med('heartbeatP99ms').toFixed(2),
      load1: med('load1').toFixed(2),
    };
  });
  printTable(
    `Locate (median of ${ROUNDS}): wrk -t1 -c${CONNECTIONS} -d${SECONDS}s, limit 8; ${NODES.toLocaleString('en')} nodes ` +
      `heartbeating every ${HEARTBEAT_INTERVAL_MS / 1000} s; spread = ${BLOBS} blobs x ${HOLDERS_PER_BLOB} holders, ` +
      `hot = 1 blob x ${HOT_HOLDERS.toLocaleString('en')} holders`,
    rows,
  );
  return {
    rows,
    samples: Object.fromEntries(samples),
    settings: { nodes: NODES, blobs: BLOBS, holdersPerBlob: HOLDERS_PER_BLOB, hotHolders: HOT_HOLDERS },
  };
}

export const controlPlaneScenarios = { 'control-plane': () => locateScenario() };
