// The figures behind the README's fleet chart: fleets of 1, 2, 4 and 8 nodes cold-start on
// one file at the same moment, without a control plane (every node from the origin) and
// with one (nodes share pieces through their agents), as `fleet` does at 8 nodes. Measured:
// bytes the origin served and the time until the last node has a verified copy. The file
// is 128 MiB (LOOM_BENCH_SWEEP_FLEET_MIB to change) so the sweep fits in a few minutes on
// a 2-core machine, where every node is two processes.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { OriginServer } from '../test/support/origin-server.js';
import {
  ORIGIN,
  makeNodes,
  runFleet,
  startAgent,
  startControlPlane,
  stopAgent,
  waitForNodes,
  type Node,
} from './fleet.bench.js';
import { DATA_DIR, MiB, dataFile, median, printTable } from './lib.js';

export const FLEET_SIZES = [1, 2, 4, 8];

export interface FleetSample {
  nodes: number;
  peers: boolean;
  round: number;
  /** From the common start until the last node's fetch exited with a verified copy. */
  seconds: number;
  originBytes: number;
  /** Each node's own `loom fetch` time. */
  nodeSeconds: number[];
}

export interface FleetSweepResult {
  sizeBytes: number;
  origin: typeof ORIGIN;
  rounds: number;
  fleetSizes: number[];
  samples: FleetSample[];
  rows: Array<Record<string, string | number>>;
}

async function withPeers(
  origin: OriginServer,
  url: string,
  nodes: Node[],
  db: string,
): Promise<Awaited<ReturnType<typeof runFleet>>> {
  const cp = await startControlPlane(db);
  try {
    for (const node of nodes) await startAgent(node, cp.url);
    await waitForNodes(cp.url, nodes.length);
    return await runFleet(origin, url, nodes, cp.url);
  } finally {
    await Promise.all(nodes.map(stopAgent));
    await cp.stop();
  }
}

export async function fleetSweep(
  size = Number(process.env.LOOM_BENCH_SWEEP_FLEET_MIB ?? 128) * MiB,
  rounds = Number(process.env.LOOM_BENCH_ROUNDS ?? 3),
): Promise<FleetSweepResult> {
  const file = dataFile(`fleet-${size}.bin`, size);
  const origin = await new OriginServer(ORIGIN).listen();
  origin.setFile('/models/fleet.bin', { content: { file, size }, etag: `"fleet-${size}"` });
  const url = origin.url('/models/fleet.bin');
  const root = join(DATA_DIR, 'fleet-sweep');
  const samples: FleetSample[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      for (const count of FLEET_SIZES) {
        for (const peers of [false, true]) {
          const nodes = makeNodes(join(root, peers ? 'peers' : 'plain'), count);
          const run = peers
            ? await withPeers(origin, url, nodes, join(root, `cp-${round}-${count}.db`))
            : await runFleet(origin, url, nodes, undefined);
          samples.push({
            nodes: count,
            peers,
            round,
            seconds: run.seconds,
            originBytes: run.originBytes,
            nodeSeconds: run.runs.map((r) => r.seconds),
          });
          console.log(
            `round ${round + 1}: ${count} node(s) ${peers ? 'with' : 'without'} peers: ` +
              `${run.seconds.toFixed(2)} s, origin ${(run.originBytes / size).toFixed(2)}x the file`,
          );
        }
      }
    }
  } finally {
    await origin.close();
    rmSync(root, { recursive: true, force: true });
  }
  const of = (count: number, peers: boolean): FleetSample[] =>
    samples.filter((s) => s.nodes === count && s.peers === peers);
  const alone = median(of(1, false).map((s) => s.seconds));
  const rows = FLEET_SIZES.map((count) => {
    const plain = of(count, false);
    const shared = of(count, true);
    const secs = (list: FleetSample[]): number => median(list.map((s) => s.seconds));
    const bytes = (list: FleetSample[]): string => (median(list.map((s) => s.originBytes)) / size).toFixed(2);
    return {
      nodes: count,
      'no peers: s (x one node)': `${secs(plain).toFixed(2)} (${(secs(plain) / alone).toFixed(2)}x)`,
      'no peers: origin / file': bytes(plain),
      'peers: s (x one node)': `${secs(shared).toFixed(2)} (${(secs(shared) / alone).toFixed(2)}x)`,
      'peers: origin / file': bytes(shared),
    };
  });
  printTable(
    `Fleet size sweep: ${size / MiB} MiB, origin ${ORIGIN.firstByteLatencyMs} ms first byte, ` +
      `${ORIGIN.rateLimitBytesPerSecond / 1e6} MB/s per connection, ` +
      `${ORIGIN.aggregateRateLimitBytesPerSecond / 1e6} MB/s in all; median of ${rounds}`,
    rows,
  );
  return { sizeBytes: size, origin: ORIGIN, rounds, fleetSizes: FLEET_SIZES, samples, rows };
}

export const fleetSweepScenarios = {
  'fleet-sweep': () => fleetSweep(),
};
