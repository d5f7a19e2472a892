// Issue 9's scenario: N nodes (separate processes, each with its own agent and cache) start
// the same fetch at the same moment against one object-store-like origin with a capped
// egress link. Measured: origin bytes over the file size, and the time until every node
// has a verified copy, against one node alone with the origin to itself; then the same
// with one node whose cached blob was corrupted (it serves bad pieces).
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { OriginServer } from '../test/support/origin-server.js';
import { freePort } from '../test/support/ports.js';
import { DATA_DIR, LOOM_BIN, MiB, dataFile, median, printTable, runCommand, type CommandRun } from './lib.js';

const SIZE = Number(process.env.LOOM_BENCH_FLEET_MIB ?? 512) * MiB;
const ORIGIN = { firstByteLatencyMs: 100, rateLimitBytesPerSecond: 25e6, aggregateRateLimitBytesPerSecond: 100e6 };

interface Node {
  id: string;
  cacheDir: string;
  out: string;
  agent: ChildProcess | undefined;
  /** The agent's base URL, for its /metrics. */
  agentUrl?: string;
}

interface FleetRun {
  seconds: number;
  originBytes: number;
  runs: CommandRun[];
}

async function waitForNodes(cpUrl: string, count: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const res = await fetch(`${cpUrl}/v1/nodes`).catch(() => undefined);
    const body = res?.ok ? ((await res.json()) as { nodes: unknown[] }) : { nodes: [] };
    if (body.nodes.length >= count) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`only some of ${count} agents registered with ${cpUrl}`);
}

async function startControlPlane(
  db: string,
): Promise<{ url: string; pid: number | undefined; stop: () => Promise<void> }> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [LOOM_BIN, 'control-plane', '--listen', `127.0.0.1:${port}`, '--store', `sqlite:${db}`],
    {
      stdio: 'ignore',
    },
  );
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if ((await fetch(`${url}/healthz`).catch(() => undefined))?.ok) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    pid: child.pid,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function startAgent(node: Node, cpUrl: string): Promise<void> {
  const port = await freePort();
  node.agentUrl = `http://127.0.0.1:${port}`;
  node.agent = spawn(
    process.execPath,
    [
      LOOM_BIN,
      'agent',
      '--control-plane',
      cpUrl,
      '--listen',
      `127.0.0.1:${port}`,
      '--advertise',
      `http://127.0.0.1:${port}`,
      '--node-id',
      node.id,
      '--cache-dir',
      node.cacheDir,
    ],
    { stdio: 'ignore' },
  );
}

async function stopAgent(node: Node): Promise<void> {
  const agent = node.agent;
  if (!agent || agent.exitCode !== null) return;
  const exited = new Promise((r) => agent.once('exit', r));
  agent.kill('SIGTERM');
  const timer = setTimeout(() => agent.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

function makeNodes(root: string, count: number): Node[] {
  rmSync(root, { recursive: true, force: true });
  return Array.from({ length: count }, (_, i) => {
    const dir = join(root, `node-${i}`);
    mkdirSync(dir, { recursive: true });
    return { id: `node-${i}`, cacheDir: join(dir, 'cache'), out: join(dir, 'model.bin'), agent: undefined };
  });
}

function fetchArgs(url: string, node: Node, cpUrl: string | undefined): string[] {
  const args = ['fetch', url, '-o', node.out, '--cache-dir', node.cacheDir, '--json'];
  return cpUrl ? [...args, '--control-plane', cpUrl, '--node-id', node.id] : args;
}

/** Starts every node's fetch at once; resolves when all are done. */
async function runFleet(
  origin: OriginServer,
  url: string,
  nodes: Node[],
  cpUrl: string | undefined,
): Promise<FleetRun> {
  origin.resetStats();
  const started = performance.now();
  const runs = await Promise.all(nodes.map((node) => runCommand(LOOM_BIN, fetchArgs(url, node, cpUrl))));
  const seconds = (performance.now() - started) / 1000;
  const failed = runs.find((r) => r.code !== 0);
  if (failed) throw new Error(`a node's fetch failed: ${failed.stderr.slice(0, 800)}`);
  return { seconds, originBytes: origin.bytesServed, runs };
}

/** What one node's `loom fetch --json` said: time, retries and where its bytes came from; its CPU. */
function nodeFigures(run: CommandRun): Record<string, unknown> {
  const s = JSON.parse(run.stdout) as Record<string, unknown>;
  return {
    seconds: s.seconds,
    cpuSeconds: Number(run.cpuSeconds.toFixed(2)),
    retries: s.retries,
    requests: s.requests,
    bytesBySource: s.bytesBySource,
    dropped: s.droppedSources,
  };
}

/** CPU seconds (user + system) a live process has used so far, from /proc; 0 once it is gone. */
function cpuOf(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** Sums the samples of one Prometheus counter, by the value of `label` when given. */
async function scrape(url: string, metric: string, label?: string): Promise<Record<string, number>> {
  const text = await fetch(`${url}/metrics`)
    .then((r) => r.text())
    .catch(() => '');
  const sums: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(metric)) continue;
    const labels = /\{(.*)\}/.exec(line)?.[1] ?? '';
    const key = label ? (new RegExp(`${label}="([^"]*)"`).exec(labels)?.[1] ?? '') : 'all';
    sums[key] = (sums[key] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sums;
}

/**
 * What serving cost during one fleet run: each agent's CPU seconds and bytes served, the
 * control plane's CPU and its requests by route (from its /metrics) per follower-second.
 */
async function fleetCost(
  nodes: Node[],
  cp: { url: string; pid: number | undefined },
  run: () => Promise<FleetRun>,
): Promise<{ result: FleetRun; cost: Record<string, unknown> }> {
  const agentsBefore = nodes.map((n) => cpuOf(n.agent?.pid));
  const cpBefore = cpuOf(cp.pid);
  const requestsBefore = await scrape(cp.url, 'loom_cp_http_requests_total', 'route');
  const result = await run();
  const agentsCpu = nodes.map((n, i) => Number((cpuOf(n.agent?.pid) - agentsBefore[i]!).toFixed(2)));
  const served = await Promise.all(
    nodes.map(async (n) => (await scrape(n.agentUrl ?? '', 'loom_agent_bytes_served_total')).all ?? 0),
  );
  const requests = await scrape(cp.url, 'loom_cp_http_requests_total', 'route');
  const nodeSeconds = result.runs.reduce((sum, r) => sum + r.seconds, 0);
  const perNodeSecond: Record<string, number> = {};
  for (const [route, count] of Object.entries(requests)) {
    const delta = count - (requestsBefore[route] ?? 0);
    if (delta > 0) perNodeSecond[route] = Number((delta / nodeSeconds).toFixed(2));
  }
  const total = Object.values(perNodeSecond).reduce((a, b) => a + b, 0);
  return {
    result,
    cost: {
      agentCpuSeconds: agentsCpu,
      agentMiBServed: served.map((b) => Math.round(b / MiB)),
      agentCpuSecondsPerGiBServed: agentsCpu.map((c, i) =>
        served[i]! > 0 ? Number(((c * 1024 * MiB) / served[i]!).toFixed(2)) : null,
      ),
      fetchCpuSeconds: result.runs.map((r) => Number(r.cpuSeconds.toFixed(2))),
      controlPlaneCpuSeconds: Number((cpuOf(cp.pid) - cpBefore).toFixed(2)),
      controlPlaneRequestsPerNodeSecond: { total: Number(total.toFixed(2)), ...perNodeSecond },
    },
  };
}

/** Flips bytes in the middle of a cached blob, as a bad disk or a malicious node would. */
function corruptBlob(cacheDir: string, sha256: string): void {
  const path = join(cacheDir, 'blobs', 'sha256', sha256);
  chmodSync(path, 0o644);
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, Math.floor(SIZE / 2));
  } finally {
    closeSync(fd);
  }
}

export async function fleetScenario(
  count = 8,
  rounds = Number(process.env.LOOM_BENCH_ROUNDS ?? 3),
): Promise<Record<string, unknown>> {
  const file = dataFile(`fleet-${SIZE}.bin`, SIZE);
  const origin = await new OriginServer(ORIGIN).listen();
  origin.setFile('/models/fleet.bin', { content: { file, size: SIZE }, etag: `"fleet-${SIZE}"` });
  const url = origin.url('/models/fleet.bin');
  const root = join(DATA_DIR, 'fleet');
  const samples = { alone: [] as number[], noPeers: [] as number[], peers: [] as number[] };
  const bytes = { noPeers: [] as number[], peers: [] as number[], badPeer: [] as number[] };
  const perNode: unknown[] = [];
  const costs: unknown[] = [];
  let badPeer: { seconds: number; excluded: boolean; exact: boolean } | undefined;
  try {
    for (let round = 0; round < rounds; round++) {
      // One node alone, the origin to itself.
      const [solo] = makeNodes(join(root, 'solo'), 1);
      samples.alone.push((await runFleet(origin, url, [solo!], undefined)).seconds);

      // N nodes without a control plane: N origin copies through one capped link.
      const plain = makeNodes(join(root, 'plain'), count);
      const noPeers = await runFleet(origin, url, plain, undefined);
      samples.noPeers.push(noPeers.seconds);
      bytes.noPeers.push(noPeers.originBytes);

      // N nodes with agents and a control plane (in a process of its own, as on a fleet).
      const cp = await startControlPlane(join(root, `cp-${round}.db`));
      const nodes = makeNodes(join(root, 'peers'), count);
      try {
        for (const node of nodes) await startAgent(node, cp.url);
        await waitForNodes(cp.url, count);
        const { result: peers, cost } = await fleetCost(nodes, cp, () => runFleet(origin, url, nodes, cp.url));
        samples.peers.push(peers.seconds);
        perNode.push(peers.runs.map((r) => nodeFigures(r)));
        costs.push(cost);
        bytes.peers.push(peers.originBytes);
        if (round === 0) badPeer = await withBadPeer(origin, url, nodes, cp.url, peers);
      } finally {
        await Promise.all(nodes.map(stopAgent));
        await cp.stop();
      }
    }
  } finally {
    await origin.close();
    rmSync(root, { recursive: true, force: true });
  }
  const alone = median(samples.alone);
  const rows = [
    {
      run: '1 node alone',
      'median s': alone.toFixed(2),
      'x alone': '1.00x',
      'origin bytes / file': '1.00',
    },
    {
      run: `${count} nodes, no control plane`,
      'median s': median(samples.noPeers).toFixed(2),
      'x alone': `${(median(samples.noPeers) / alone).toFixed(2)}x`,
      'origin bytes / file': (median(bytes.noPeers) / SIZE).toFixed(2),
    },
    {
      run: `${count} nodes, loom with peers`,
      'median s': median(samples.peers).toFixed(2),
      'x alone': `${(median(samples.peers) / alone).toFixed(2)}x`,
      'origin bytes / file': (median(bytes.peers) / SIZE).toFixed(2),
    },
  ];
  printTable(
    `${count} nodes cold-start on one ${SIZE / MiB} MiB file (origin: 100 ms first byte, 25 MB/s per connection, 100 MB/s in all; median of ${rounds})`,
    rows,
  );
  if (badPeer) {
    printTable('The same with one node serving corrupt pieces', [
      {
        'every output exact': badPeer.exact ? 'yes' : 'NO',
        'bad node excluded': badPeer.excluded ? 'yes' : 'NO',
        seconds: badPeer.seconds.toFixed(2),
      },
    ]);
  }
  if (process.env.LOOM_BENCH_VERBOSE) {
    console.log(JSON.stringify(perNode, null, 1));
    console.log(JSON.stringify(costs, null, 1));
  }
  return { size: SIZE, origin: ORIGIN, rounds, samples, bytes, rows, badPeer, perNode, costs };
}

/**
 * Node 0 keeps its copy but corrupts its cached blob; the others start over with empty
 * caches and fetch again. Every output must still be exact and node 0 reported.
 */
async function withBadPeer(
  origin: OriginServer,
  url: string,
  nodes: Node[],
  cpUrl: string,
  first: FleetRun,
): Promise<{ seconds: number; excluded: boolean; exact: boolean }> {
  const digest = (JSON.parse(first.runs[0]!.stdout) as { sha256: string }).sha256;
  corruptBlob(nodes[0]!.cacheDir, digest);
  const others = nodes.slice(1);
  for (const node of others) {
    rmSync(node.out, { force: true });
    await stopAgent(node);
    rmSync(node.cacheDir, { recursive: true, force: true });
    await startAgent(node, cpUrl);
  }
  await waitForNodes(cpUrl, nodes.length);
  const run = await runFleet(origin, url, others, cpUrl);
  const summaries = run.runs.map(
    (r) => JSON.parse(r.stdout) as { sha256: string; droppedSources?: Array<{ id: string }> },
  );
  return {
    seconds: run.seconds,
    exact: summaries.every((s) => s.sha256 === digest),
    excluded: summaries.some((s) => s.droppedSources?.some((d) => d.id === nodes[0]!.id) ?? false),
  };
}

export const fleetScenarios = {
  fleet: () => fleetScenario(),
};

// The fleet-size sweep (fleet-sweep.bench.ts) starts fleets the same way.
export { ORIGIN, makeNodes, runFleet, startAgent, stopAgent, startControlPlane, waitForNodes, type Node };
