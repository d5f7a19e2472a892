// The figures behind the README's throughput chart: loom fetch and aria2c at 1, 2, 4, 8, 16
// and 32 connections, and one plain connection (curl, the sequential case), on the
// object-store-like origin (100 ms to first byte, 50 MB/s per connection). The file is
// small enough (256 MiB, LOOM_BENCH_SWEEP_MIB to change) for the sweep to take a few
// minutes on a 2-core machine.
import { mkdirSync } from 'node:fs';
import { OriginServer } from '../test/support/origin-server.js';
import { OUT_DIR, aria2, curl, loom } from './fetch.bench.js';
import { MiB, dataFile, hasCommand, mbps, median, printTable, requireCommand, type CommandRun } from './lib.js';

export const WORKER_COUNTS = [1, 2, 4, 8, 16, 32];
/** aria2c refuses -x above 16; past that only -s (the number of pieces) grows. */
const ARIA2_MAX_CONNECTIONS = 16;

export interface WorkersSample {
  client: 'loom' | 'aria2c' | 'sequential';
  /** Requests in flight asked for; 1 for the sequential case. */
  workers: number;
  round: number;
  seconds: number;
  mbPerSecond: number;
}

export interface WorkersSweepResult {
  sizeBytes: number;
  origin: { firstByteLatencyMs: number; rateLimitBytesPerSecond: number };
  rounds: number;
  workerCounts: number[];
  /** What each contender ran, with N for the worker count. */
  commands: Record<WorkersSample['client'], string>;
  skipped: string[];
  samples: WorkersSample[];
  rows: Array<Record<string, string | number>>;
}

/**
 * aria2c with N connections and N pieces. -k1M lets it cut the file into N pieces at every
 * N here (its default minimum piece of 20 MiB would cap a 256 MiB file at 12).
 */
function aria2Sweep(url: string, connections: number): Promise<CommandRun> {
  const split = [`-x${Math.min(connections, ARIA2_MAX_CONNECTIONS)}`, `-s${connections}`, '-k1M'];
  return aria2(url, split, 'aria2-sweep.bin');
}

export async function workersSweep(
  size = Number(process.env.LOOM_BENCH_SWEEP_MIB ?? 256) * MiB,
  rounds = Number(process.env.LOOM_BENCH_ROUNDS ?? 3),
): Promise<WorkersSweepResult> {
  mkdirSync(OUT_DIR, { recursive: true });
  const file = dataFile(`object-${size}.bin`, size);
  const originOptions = { firstByteLatencyMs: 100, rateLimitBytesPerSecond: 50e6 };
  const origin = await new OriginServer(originOptions).listen();
  origin.setFile('/weights.bin', { file, size });
  const url = origin.url('/weights.bin');
  requireCommand('curl', 'apt-get install curl');
  const withAria2 = hasCommand('aria2c');
  const skipped = withAria2 ? [] : ['aria2c: not installed (apt-get install aria2)'];
  if (!withAria2) console.log('skipped: aria2c is not installed (apt-get install aria2)');
  const samples: WorkersSample[] = [];
  const record = (client: WorkersSample['client'], workers: number, round: number, run: CommandRun): void => {
    samples.push({ client, workers, round, seconds: run.seconds, mbPerSecond: mbps(size, run.seconds) });
  };
  try {
    // Each round visits every worker count once, the contenders back to back, so a slow
    // minute on this shared machine hits every contender at that count alike.
    for (let round = 0; round < rounds; round++) {
      record('sequential', 1, round, await curl(url));
      for (const workers of WORKER_COUNTS) {
        record('loom', workers, round, await loom(url, ['--workers', String(workers)]));
        if (withAria2) record('aria2c', workers, round, await aria2Sweep(url, workers));
      }
      console.log(`round ${round + 1} of ${rounds} done`);
    }
  } finally {
    await origin.close();
  }
  const medianOf = (client: WorkersSample['client'], workers: number): number | undefined => {
    const of = samples.filter((s) => s.client === client && s.workers === workers).map((s) => s.seconds);
    return of.length ? median(of) : undefined;
  };
  const sequential = medianOf('sequential', 1)!;
  const cell = (seconds: number | undefined): string =>
    seconds === undefined ? 'skipped' : `${mbps(size, seconds)} (${(sequential / seconds).toFixed(1)}x)`;
  const rows = WORKER_COUNTS.map((workers) => ({
    workers,
    'loom MB/s (x sequential)': cell(medianOf('loom', workers)),
    'aria2c MB/s (x sequential)': cell(medianOf('aria2c', workers)),
  }));
  printTable(
    `Throughput against workers: ${size / MiB} MiB, 100 ms first byte, 50 MB/s per connection, median of ${rounds}; ` +
      `sequential (curl, one connection): ${mbps(size, sequential)} MB/s`,
    rows,
  );
  return {
    sizeBytes: size,
    origin: originOptions,
    rounds,
    workerCounts: WORKER_COUNTS,
    commands: {
      loom: 'loom fetch URL -o OUT --json --workers N (cache on, emptied before each run)',
      aria2c: `aria2c -x min(N,${ARIA2_MAX_CONNECTIONS}) -s N -k1M`,
      sequential: 'curl -sS -f -o OUT URL',
    },
    skipped,
    samples,
    rows,
  };
}

export const workersSweepScenarios = {
  'workers-sweep': () => workersSweep(),
};
