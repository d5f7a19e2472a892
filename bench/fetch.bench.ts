// Issue 2's scenarios: loom fetch against the sequential baseline and aria2c on an
// object-store-like origin, against curl on plain loopback (HTTP and HTTPS), and peak RSS
// across worker counts and file sizes.
import { rmSync, mkdirSync } from 'node:fs';
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

function aria2(url: string): Promise<CommandRun> {
  const out = 'aria2.bin';
  return runChecked('aria2c', [
    '-x16',
    '-s16',
    '-k10M',
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

export async function objectStoreScenario(size = GiB): Promise<Record<string, unknown>> {
  mkdirSync(OUT_DIR, { recursive: true });
  const file = dataFile(`object-${size}.bin`, size);
  const origin = await new OriginServer({ firstByteLatencyMs: 100, rateLimitBytesPerSecond: 50 * 1e6 }).listen();
  origin.setFile('/weights.bin', { file, size });
  const url = origin.url('/weights.bin');
  try {
    const contenders: Record<string, () => Promise<CommandRun>> = {
      loom: () => loom(url),
      'loom --no-cache': () => loom(url, ['--no-cache']),
    };
    if (hasCommand('aria2c')) contenders['aria2c -x16 -s16 -k10M'] = () => aria2(url);
    const runs = await interleave(3, contenders);
    const sequential = await loom(url, ['--workers', '1']);
    const loomSeconds = median(runs.loom!.map((r) => r.seconds));
    const rows = [
      {
        client: 'loom (defaults: 16 workers, 10 MiB chunks)',
        seconds: loomSeconds.toFixed(2),
        'MB/s': mbps(size, loomSeconds),
        'loom is': '1.00x',
      },
      {
        client: 'loom --workers 1 (sequential baseline)',
        seconds: sequential.seconds.toFixed(2),
        'MB/s': mbps(size, sequential.seconds),
        'loom is': ratio(sequential.seconds, loomSeconds),
      },
    ];
    const plain = median(runs['loom --no-cache']!.map((r) => r.seconds));
    rows.push({
      client: 'loom --no-cache (no sha256, no cache)',
      seconds: plain.toFixed(2),
      'MB/s': mbps(size, plain),
      'loom is': ratio(plain, loomSeconds),
    });
    const aria = runs['aria2c -x16 -s16 -k10M'];
    if (aria) {
      const s = median(aria.map((r) => r.seconds));
      rows.push({
        client: 'aria2c -x16 -s16 -k10M',
        seconds: s.toFixed(2),
        'MB/s': mbps(size, s),
        'loom is': ratio(s, loomSeconds),
      });
    }
    printTable(`Object-store origin: ${size / GiB} GiB, 100 ms first byte, 50 MB/s per connection (median of 3)`, rows);
    return { size, rows };
  } finally {
    await origin.close();
  }
}

export async function loopbackScenario(size = GiB): Promise<Record<string, unknown>> {
  mkdirSync(OUT_DIR, { recursive: true });
  requireCommand('nginx', 'apt-get install nginx-light');
  const file = dataFile(`plain-${size}.bin`, size);
  const ca = makeTestCa();
  const nginx = await startNginx(DATA_DIR, { cert: ca.serverCert, key: ca.serverKey });
  const name = file.split('/').pop()!;
  try {
    const http = nginx.httpUrl(name);
    const https = nginx.httpsUrl(name);
    const runs = await interleave(3, {
      'loom http': () => loom(http),
      'loom --no-cache http': () => loom(http, ['--no-cache']),
      'loom --no-cache --no-fsync http': () => loom(http, ['--no-cache', '--no-fsync']),
      'curl http': () => curl(http),
      'loom https': () => loom(https, ['--ca-cert', ca.caCertFile]),
      'loom --no-cache https': () => loom(https, ['--no-cache', '--ca-cert', ca.caCertFile]),
      'curl https': () => curl(https, ['--cacert', ca.caCertFile]),
    });
    const secs = (k: string): number => median(runs[k]!.map((r) => r.seconds));
    const rows = Object.keys(runs).map((k) => {
      const scheme = k.endsWith('https') ? 'https' : 'http';
      return {
        client: k,
        seconds: secs(k).toFixed(2),
        'MB/s': mbps(size, secs(k)),
        'vs curl same scheme': ratio(secs(`curl ${scheme}`), secs(k)),
      };
    });
    printTable(`Plain loopback nginx: ${size / GiB} GiB (median of 3; ratio > 1 means faster than curl)`, rows);
    return { size, rows };
  } finally {
    nginx.stop();
  }
}

export async function memoryScenario(): Promise<Record<string, unknown>> {
  mkdirSync(OUT_DIR, { recursive: true });
  const ca = makeTestCa();
  const nginx = await startNginx(DATA_DIR, { cert: ca.serverCert, key: ca.serverKey });
  const rows: Array<Record<string, string | number>> = [];
  try {
    for (const size of [GiB, 4 * GiB]) {
      const file = dataFile(`plain-${size}.bin`, size);
      const name = file.split('/').pop()!;
      // Chunk size must not matter either: 10 MiB (default) and 64 MiB at 16 workers.
      const variants: Array<[workers: number, chunk: string]> = [
        [16, '10MiB'],
        [16, '64MiB'],
        [64, '10MiB'],
      ];
      for (const [workers, chunk] of variants) {
        const run = await loom(nginx.httpUrl(name), ['--workers', String(workers), '--chunk-size', chunk]);
        rows.push({
          file: `${size / GiB} GiB`,
          workers,
          chunk,
          'peak RSS (MiB)': (run.peakRssKiB / 1024).toFixed(1),
          seconds: run.seconds.toFixed(2),
        });
      }
    }
    printTable('Peak RSS of loom fetch (VmHWM), nginx on loopback', rows);
    return { rows };
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
