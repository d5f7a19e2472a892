// Issues 2 and 8's scenarios: loom fetch against the sequential baseline and aria2c on an
// object-store-like origin, against curl and aria2c on plain loopback (HTTP and HTTPS), and
// peak RSS across worker counts and file sizes. Every run records its wall time, its CPU
// seconds (user and system, from the kernel's rusage) and its peak RSS; loom's runs also
// the seconds from the last byte to the digest, and how far the finished prefix (which the
// hash follows) was behind the end of the file when that last byte arrived.
import { rmSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { OriginServer } from '../test/support/origin-server.js';
import { startNginx } from './origin/nginx.js';
import { makeTestCa } from '../test/support/test-ca.js';
import {
  DATA_DIR,
  GiB,
  LOOM_BIN,
  MiB,
  dataFile,
  hasCommand,
  loadAverage,
  mbps,
  median,
  printTable,
  ratio,
  requireCommand,
  runChecked,
  type CommandRun,
} from './lib.js';

const OUT_DIR = join(DATA_DIR, 'out');

/**
 * loom fetch at its defaults, cache included, but with an empty cache every run: each run is
 * a real download (into the cache, hashed, then linked), never a hit.
 */
function loom(url: string, extra: string[] = []): Promise<CommandRun> {
  const out = join(OUT_DIR, 'loom.bin');
  const cacheDir = join(OUT_DIR, 'loom-cache');
  rmSync(out, { force: true });
  rmSync(cacheDir, { recursive: true, force: true });
  return runChecked(LOOM_BIN, ['fetch', url, '-o', out, '--json', ...extra], { LOOM_CACHE_DIR: cacheDir }).finally(
    () => {
      rmSync(out, { force: true });
      rmSync(cacheDir, { recursive: true, force: true });
    },
  );
}

function curl(url: string, extra: string[] = []): Promise<CommandRun> {
  const out = join(OUT_DIR, 'curl.bin');
  return runChecked('curl', ['-sS', '-f', '-o', out, ...extra, url]).finally(() => rmSync(out, { force: true }));
}

/** aria2c into OUT_DIR; `split` is its connections and piece flags (the issue's -x16 -s16 -k10M by default). */
export function aria2(url: string, split = ['-x16', '-s16', '-k10M'], out = 'aria2.bin'): Promise<CommandRun> {
  return runChecked('aria2c', [
    ...split,
    '-d',
    OUT_DIR,
    '-o',
    out,
    '--allow-overwrite=true',
    '--auto-file-renaming=false',
    '--console-log-level=error',
    '--summary-interval=0',
    '--download-result=hide',
    url,
  ]).finally(() => {
    rmSync(join(OUT_DIR, out), { force: true });
    rmSync(join(OUT_DIR, `${out}.aria2`), { force: true });
  });
}

/** Runs the contenders in turn, `rounds` times, so machine noise hits each alike. */
async function interleave(
  rounds: number,
  contenders: Record<string, () => Promise<CommandRun>>,
): Promise<Record<string, CommandRun[]>> {
  const runs: Record<string, CommandRun[]> = Object.fromEntries(Object.keys(contenders).map((k) => [k, []]));
  for (let i = 0; i < rounds; i++) {
    for (const [name, run] of Object.entries(contenders)) runs[name]!.push(await run());
  }
  return runs;
}

/** Rounds per contender (LOOM_BENCH_ROUNDS, default 3): each figure is the median. */
const ROUNDS = Math.max(1, Number(process.env.LOOM_BENCH_ROUNDS ?? 3));

/** One run as the JSON keeps it. */
interface Sample {
  seconds: number;
  userSeconds: number | undefined;
  systemSeconds: number | undefined;
  peakRssKiB: number;
  /** From loom's --json summary; undefined for other tools and runs without a sha256. */
  lastByteToDigestSeconds: number | undefined;
  /** Likewise: bytes past the finished prefix when the last byte arrived (hashed after it). */
  prefixBehindAtLastByte: number | undefined;
}

/** The medians of a contender's runs, per GiB where it says so. */
interface Medians {
  seconds: number;
  mbPerSecond: number;
  cpuSecondsPerGiB: number | undefined;
  userSecondsPerGiB: number | undefined;
  peakRssMiB: number;
  lastByteToDigestSeconds: number | undefined;
  prefixBehindAtLastByteMiB: number | undefined;
}

function sampleOf(run: CommandRun): Sample {
  let lastByteToDigestSeconds: number | undefined;
  let prefixBehindAtLastByte: number | undefined;
  try {
    const summary = JSON.parse(run.stdout) as {
      lastByteToDigestSeconds?: number | null;
      prefixBehindAtLastByte?: number | null;
    };
    lastByteToDigestSeconds = summary.lastByteToDigestSeconds ?? undefined;
    prefixBehindAtLastByte = summary.prefixBehindAtLastByte ?? undefined;
  } catch {
    // not loom --json
  }
  return {
    seconds: run.seconds,
    userSeconds: run.userSeconds,
    systemSeconds: run.systemSeconds,
    peakRssKiB: run.peakRssKiB,
    lastByteToDigestSeconds,
    prefixBehindAtLastByte,
  };
}

function mediansOf(samples: Sample[], size: number): Medians {
  const defined = (values: Array<number | undefined>): number | undefined =>
    values.every((v) => v !== undefined) ? median(values as number[]) : undefined;
  const seconds = median(samples.map((s) => s.seconds));
  const perGiB = (v: number | undefined): number | undefined => (v === undefined ? undefined : v / (size / GiB));
  const perMiB = (v: number | undefined): number | undefined => (v === undefined ? undefined : v / MiB);
  return {
    seconds,
    mbPerSecond: mbps(size, seconds),
    cpuSecondsPerGiB: perGiB(
      defined(samples.map((s) => (s.systemSeconds === undefined ? undefined : s.userSeconds! + s.systemSeconds))),
    ),
    userSecondsPerGiB: perGiB(defined(samples.map((s) => s.userSeconds))),
    peakRssMiB: median(samples.map((s) => s.peakRssKiB)) / 1024,
    lastByteToDigestSeconds: defined(samples.map((s) => s.lastByteToDigestSeconds)),
    prefixBehindAtLastByteMiB: perMiB(defined(samples.map((s) => s.prefixBehindAtLastByte))),
  };
}

const fixed = (v: number | undefined, digits = 2): string => (v === undefined ? '-' : v.toFixed(digits));

/**
 * What every fetch scenario returns (and run.ts writes to bench/results/): the machine's
 * load, and per contender its command, every sample and the medians.
 */
type ScenarioResult = {
  size: number;
  rounds: number;
  cpus: number;
  /** 1/5/15-minute load averages before and after: the machine is shared. */
  loadAverage: { start: number[]; end: number[] };
  contenders: Record<string, { command: string; samples: Sample[]; medians: Medians }>;
  rows: Array<Record<string, string | number>>;
};

/** Runs `contenders` interleaved and gathers their samples and medians. */
async function measure(
  size: number,
  contenders: Record<string, { command: string; run: () => Promise<CommandRun> }>,
): Promise<Omit<ScenarioResult, 'rows'>> {
  const start = loadAverage();
  const runs = await interleave(
    ROUNDS,
    Object.fromEntries(Object.entries(contenders).map(([name, c]) => [name, c.run])),
  );
  const out: ScenarioResult['contenders'] = {};
  for (const [name, samples] of Object.entries(runs)) {
    const kept = samples.map(sampleOf);
    out[name] = { command: contenders[name]!.command, samples: kept, medians: mediansOf(kept, size) };
  }
  return { size, rounds: ROUNDS, cpus: cpus().length, loadAverage: { start, end: loadAverage() }, contenders: out };
}

/** The table columns every fetch scenario shares. */
function row(name: string, m: Medians): Record<string, string | number> {
  return {
    client: name,
    seconds: m.seconds.toFixed(2),
    'MB/s': m.mbPerSecond,
    'CPU s/GiB': fixed(m.cpuSecondsPerGiB),
    'user s/GiB': fixed(m.userSecondsPerGiB),
    'peak RSS MiB': m.peakRssMiB.toFixed(1),
    'last byte to digest s': fixed(m.lastByteToDigestSeconds, 3),
    'prefix behind at last byte MiB': fixed(m.prefixBehindAtLastByteMiB, 1),
  };
}

function loomCommand(extra: string[]): string {
  return ['loom fetch URL -o OUT --json', ...extra].join(' ');
}

const ARIA2 = 'aria2c -x16 -s16 -k10M';

export async function objectStoreScenario(size = GiB): Promise<ScenarioResult> {
  mkdirSync(OUT_DIR, { recursive: true });
  const file = dataFile(`object-${size}.bin`, size);
  const origin = await new OriginServer({ firstByteLatencyMs: 100, rateLimitBytesPerSecond: 50 * 1e6 }).listen();
  origin.setFile('/weights.bin', { file, size });
  const url = origin.url('/weights.bin');
  const loomRun = (extra: string[]) => ({ command: loomCommand(extra), run: () => loom(url, extra) });
  try {
    const contenders: Record<string, { command: string; run: () => Promise<CommandRun> }> = {
      'loom (defaults)': loomRun([]),
      'loom --no-fsync': loomRun(['--no-fsync']),
      'loom --no-cache': loomRun(['--no-cache']),
      'loom --workers 1': loomRun(['--workers', '1']),
    };
    if (hasCommand('aria2c')) contenders[ARIA2] = { command: `${ARIA2} URL`, run: () => aria2(url) };
    const measured = await measure(size, contenders);
    const m = (name: string): Medians | undefined => measured.contenders[name]?.medians;
    const defaults = m('loom (defaults)')!;
    const noFsync = m('loom --no-fsync')!;
    const aria = m(ARIA2);
    const rows = Object.entries(measured.contenders).map(([name, c]) => ({
      ...row(name, c.medians),
      'loom defaults is': ratio(c.medians.seconds, defaults.seconds),
      'loom --no-fsync is': ratio(c.medians.seconds, noFsync.seconds),
    }));
    printTable(
      `Object-store origin: ${size / GiB} GiB, 100 ms first byte, 50 MB/s per connection (median of ${ROUNDS}, load ${measured.loadAverage.start[0]} → ${measured.loadAverage.end[0]})`,
      rows,
    );
    if (aria) console.log(`loom --no-fsync vs ${ARIA2} (neither fsyncs): ${ratio(aria.seconds, noFsync.seconds)}`);
    console.log(`loom defaults vs --workers 1: ${ratio(m('loom --workers 1')!.seconds, defaults.seconds)}`);
    return { ...measured, rows };
  } finally {
    await origin.close();
  }
}

export async function loopbackScenario(size = GiB): Promise<ScenarioResult> {
  mkdirSync(OUT_DIR, { recursive: true });
  requireCommand('nginx', 'apt-get install nginx-light');
  const file = dataFile(`plain-${size}.bin`, size);
  const ca = makeTestCa();
  const nginx = await startNginx(DATA_DIR, { cert: ca.serverCert, key: ca.serverKey });
  const name = file.split('/').pop()!;
  try {
    const http = nginx.httpUrl(name);
    const https = nginx.httpsUrl(name);
    const loomRun = (url: string, extra: string[]) => ({ command: loomCommand(extra), run: () => loom(url, extra) });
    const tls = ['--ca-cert', ca.caCertFile];
    const contenders: Record<string, { command: string; run: () => Promise<CommandRun> }> = {
      'loom http (defaults)': loomRun(http, []),
      'loom --no-fsync http': loomRun(http, ['--no-fsync']),
      'loom --no-cache http': loomRun(http, ['--no-cache']),
      'loom --no-cache --no-fsync http': loomRun(http, ['--no-cache', '--no-fsync']),
      'curl -o http': { command: 'curl -sS -f -o OUT URL', run: () => curl(http) },
      'loom --no-cache --no-fsync https': loomRun(https, ['--no-cache', '--no-fsync', ...tls]),
      'curl -o https': {
        command: 'curl -sS -f -o OUT --cacert CA URL',
        run: () => curl(https, ['--cacert', ca.caCertFile]),
      },
    };
    if (hasCommand('aria2c')) contenders[`${ARIA2} http`] = { command: `${ARIA2} URL`, run: () => aria2(http) };
    const measured = await measure(size, contenders);
    const rows = Object.entries(measured.contenders).map(([client, c]) => {
      const scheme = client.endsWith('https') ? 'https' : 'http';
      return {
        ...row(client, c.medians),
        'vs curl same scheme': ratio(measured.contenders[`curl -o ${scheme}`]!.medians.seconds, c.medians.seconds),
      };
    });
    printTable(
      `Plain loopback nginx: ${size / GiB} GiB (median of ${ROUNDS}, load ${measured.loadAverage.start[0]} → ${measured.loadAverage.end[0]}; ratio > 1 means faster than curl)`,
      rows,
    );
    return { ...measured, rows };
  } finally {
    nginx.stop();
  }
}

export async function memoryScenario(): Promise<Record<string, unknown>> {
  mkdirSync(OUT_DIR, { recursive: true });
  const ca = makeTestCa();
  const nginx = await startNginx(DATA_DIR, { cert: ca.serverCert, key: ca.serverKey });
  const rows: Array<Record<string, string | number>> = [];
  const cases: Record<string, { size: number; workers: number; samples: Sample[] }> = {};
  const start = loadAverage();
  try {
    const variants: Array<[size: number, workers: number]> = [
      [GiB, 16],
      [GiB, 64],
      [4 * GiB, 16],
      [4 * GiB, 64],
    ];
    for (let round = 0; round < ROUNDS; round++) {
      for (const [size, workers] of variants) {
        const name = dataFile(`plain-${size}.bin`, size).split('/').pop()!;
        const run = await loom(nginx.httpUrl(name), ['--workers', String(workers)]);
        (cases[`${size / GiB} GiB, ${workers} workers`] ??= { size, workers, samples: [] }).samples.push(sampleOf(run));
      }
    }
    for (const [key, c] of Object.entries(cases)) {
      const m = mediansOf(c.samples, c.size);
      rows.push({
        case: key,
        'peak RSS MiB (median)': m.peakRssMiB.toFixed(1),
        'peak RSS MiB (max)': (Math.max(...c.samples.map((s) => s.peakRssKiB)) / 1024).toFixed(1),
        seconds: m.seconds.toFixed(2),
        'CPU s/GiB': fixed(m.cpuSecondsPerGiB),
      });
    }
    printTable(`Peak RSS of loom fetch (defaults, cache on), nginx on loopback (median of ${ROUNDS})`, rows);
    return { rounds: ROUNDS, cpus: cpus().length, loadAverage: { start, end: loadAverage() }, cases, rows };
  } finally {
    nginx.stop();
  }
}

export const fetchScenarios = {
  'fetch-clients': () => clientScenario(),
  'fetch-object-store': () => objectStoreScenario(),
  'fetch-loopback': () => loopbackScenario(),
  'fetch-memory': () => memoryScenario(),
};

export { MiB };

/** node:http against undici 7, same 16 ranged requests, bytes discarded; curl as the yardstick. */
export async function clientScenario(size = GiB): Promise<Record<string, unknown>> {
  const file = dataFile(`plain-${size}.bin`, size);
  const ca = makeTestCa();
  const nginx = await startNginx(DATA_DIR, { cert: ca.serverCert, key: ca.serverKey });
  const url = nginx.httpUrl(file.split('/').pop()!);
  const script = join(import.meta.dirname, 'clients', 'ranged-download.ts');
  // Each run reports the transfer time itself (curl through -w), without process start-up.
  const seconds = async (run: Promise<CommandRun>): Promise<CommandRun> => {
    const done = await run;
    return { ...done, seconds: Number(done.stdout.trim()) };
  };
  const viaClient = (client: string) => () =>
    seconds(runChecked(process.execPath, ['--import', 'tsx', script, client, url, String(size), '16']));
  try {
    const runs = await interleave(3, {
      'node:http (16 keep-alive sockets)': viaClient('node-http'),
      'undici 7 Pool (16 connections)': viaClient('undici'),
      'curl -o /dev/null (one connection)': () =>
        seconds(runChecked('curl', ['-sS', '-f', '-o', '/dev/null', '-w', '%{time_total}', url])),
    });
    const base = median(runs['node:http (16 keep-alive sockets)']!.map((r) => r.seconds));
    const rows = Object.entries(runs).map(([client, samples]) => {
      const s = median(samples.map((r) => r.seconds));
      return { client, seconds: s.toFixed(2), 'MB/s': mbps(size, s), 'node:http is': ratio(s, base) };
    });
    printTable(`HTTP clients, 1 GiB from nginx on loopback, bytes discarded, transfer time only (median of 3)`, rows);
    return { rows };
  } finally {
    nginx.stop();
  }
}

// The workers sweep (workers-sweep.bench.ts) races the same contenders.
export { loom, curl, OUT_DIR };
