// `npm run demo`: the whole story on this machine, embedded defaults only (no network, no
// Redis, no configuration, no root). An object-store-like origin (150 ms to first byte,
// ~50 MB/s per connection, the original tool's S3 case) serves a generated model; a control
// plane on SQLite and three node agents, each with its own cache, run beside it. Then:
// one connection, `loom fetch` with its defaults, a cache hit, a second node served by the
// first node's agent, and three fresh nodes starting at once. Every output's sha256 is
// checked, and everything started is stopped (also on Ctrl-C or failure).
//
//   npm run demo [-- --size 256MiB]
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, mkdirSync, mkdtempSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { formatBytes, parseSize } from '../src/core/units.js';
import { OriginServer } from '../test/support/origin-server.js';
import { freePort } from '../test/support/ports.js';
import { LOOM_BIN, MiB } from './lib.js';

const { values: flags } = parseArgs({ options: { size: { type: 'string', default: '1GiB' } } });
const SIZE = parseSize(flags.size!, '--size');
const ORIGIN = { firstByteLatencyMs: 150, rateLimitBytesPerSecond: 50e6 };

interface FetchSummary {
  seconds: number;
  sha256: string;
  cache: string;
  bytesBySource?: Record<string, number>;
  transferredBytes?: number;
}

interface Row {
  scenario: string;
  seconds: number;
  originBytes: number;
  peerBytes: number;
  sha256ok: boolean;
}

const work = mkdtempSync(join(tmpdir(), 'loom-demo-'));
const children = new Set<ChildProcess>();
/** Pids of the long-running children (control plane, agents), printed at the end for checks. */
const childPids: number[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
    await Promise.all(
      [...children].map((child) =>
        child.exitCode === null ? new Promise((resolve) => child.once('exit', resolve)) : undefined,
      ),
    );
    for (const step of cleanups.reverse()) await step();
    rmSync(work, { recursive: true, force: true });
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping everything the demo started`);
    void cleanup().then(() => process.exit(130));
  });
}

function checkFreeDisk(): void {
  const stats = statfsSync(tmpdir());
  const free = stats.bavail * stats.bsize;
  // The generated model, one plain copy, and four node caches (outputs are hard links).
  const needed = SIZE * 6 + 64 * MiB;
  if (free < needed) {
    throw new Error(
      `the demo needs about ${formatBytes(needed)} free in ${tmpdir()} and there is ${formatBytes(free)}: pass a smaller --size (e.g. --size 256MiB)`,
    );
  }
}

/** The generated model, in the demo's own temporary folder (removed at the end). */
function writeModel(path: string): void {
  const block = randomBytes(16 * MiB);
  const fd = openSync(path, 'w');
  try {
    for (let at = 0; at < SIZE; at += block.length) {
      // A counter in each block keeps blocks distinct without generating gigabytes of entropy.
      block.writeBigUInt64BE(BigInt(at), 0);
      writeSync(fd, block, 0, Math.min(block.length, SIZE - at), at);
    }
  } finally {
    closeSync(fd);
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Runs `loom fetch … --json`; its progress goes to this terminal, its summary is parsed. */
function loomFetch(args: string[]): Promise<FetchSummary> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LOOM_BIN, 'fetch', ...args, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.add(child);
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      children.delete(child);
      if (code !== 0) return reject(new Error(`loom fetch ${args.join(' ')} exited ${code}`));
      try {
        resolve(JSON.parse(stdout) as FetchSummary);
      } catch (err) {
        reject(new Error(`loom fetch printed no JSON summary: ${(err as Error).message}`));
      }
    });
  });
}

interface DemoNode {
  id: string;
  cacheDir: string;
  agent: ChildProcess | undefined;
}

async function waitForHttp(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const res = await fetch(url).catch(() => undefined);
    if (res?.ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing answers at ${url}`);
}

async function startAgent(node: DemoNode, cpUrl: string): Promise<void> {
  const port = await freePort();
  const agent = spawn(
    process.execPath,
    [
      LOOM_BIN,
      'agent',
      '--control-plane',
      cpUrl,
      '--listen',
      `127.0.0.1:${port}`,
      '--node-id',
      node.id,
      '--cache-dir',
      node.cacheDir,
    ],
    { stdio: 'ignore' },
  );
  children.add(agent);
  childPids.push(agent.pid!);
  agent.once('exit', () => children.delete(agent));
  node.agent = agent;
  for (let i = 0; i < 200; i++) {
    const res = await fetch(`${cpUrl}/v1/nodes`).catch(() => undefined);
    const body = res?.ok ? ((await res.json()) as { nodes: Array<{ id: string }> }) : { nodes: [] };
    if (body.nodes.some((n) => n.id === node.id)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the agent of ${node.id} did not register with the control plane`);
}

async function stopAgent(node: DemoNode): Promise<void> {
  const agent = node.agent;
  if (!agent || agent.exitCode !== null) return;
  const exited = new Promise((resolve) => agent.once('exit', resolve));
  agent.kill('SIGTERM');
  await exited;
}

function bytesFrom(summary: FetchSummary): { origin: number; peers: number } {
  const sources = summary.bytesBySource ?? {};
  const origin = sources.origin ?? (summary.cache === 'hit' ? 0 : (summary.transferredBytes ?? 0));
  const peers = Object.entries(sources)
    .filter(([id]) => id !== 'origin')
    .reduce((sum, [, bytes]) => sum + bytes, 0);
  return { origin, peers };
}

function printTable(rows: Row[], baseline: number): void {
  const mb = (bytes: number): string => (bytes / 1e6).toFixed(0);
  const lines = rows.map((row) => ({
    scenario: row.scenario,
    time: row.seconds < 1 ? `${(row.seconds * 1000).toFixed(0)} ms` : `${row.seconds.toFixed(2)} s`,
    'MB/s': (((SIZE / 1e6) * (row.scenario.startsWith('3 nodes') ? 3 : 1)) / row.seconds).toFixed(0),
    'speed-up': `${(baseline / row.seconds).toFixed(1)}x`,
    'bytes from': `origin ${mb(row.originBytes)} MB, peers ${mb(row.peerBytes)} MB`,
    sha256: row.sha256ok ? 'ok' : 'MISMATCH',
  }));
  const headers = Object.keys(lines[0]!) as Array<keyof (typeof lines)[number]>;
  const widths = headers.map((h) => Math.max(h.length, ...lines.map((l) => l[h].length)));
  const fmt = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(`\n${fmt(headers)}`);
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const line of lines) console.log(fmt(headers.map((h) => line[h])));
}

async function main(): Promise<void> {
  checkFreeDisk();
  console.log(`Generating a ${formatBytes(SIZE)} model…`);
  const model = join(work, 'model.safetensors');
  writeModel(model);
  const digest = await sha256OfFile(model);

  const origin = await new OriginServer(ORIGIN).listen();
  cleanups.push(() => origin.close());
  origin.setFile('/bucket/llama/model.safetensors', { content: { file: model, size: SIZE }, etag: `"demo-${SIZE}"` });
  const url = origin.url('/bucket/llama/model.safetensors');

  // The control plane runs in a process of its own, as on a fleet: in this one it would
  // share an event loop with the origin simulator, which is busy serving bytes.
  const cpPort = await freePort();
  const cpUrl = `http://127.0.0.1:${cpPort}`;
  const cp = spawn(
    process.execPath,
    [
      LOOM_BIN,
      'control-plane',
      '--listen',
      `127.0.0.1:${cpPort}`,
      '--store',
      `sqlite:${join(work, 'control-plane.db')}`,
    ],
    { stdio: 'ignore' },
  );
  children.add(cp);
  childPids.push(cp.pid!);
  cp.once('exit', () => children.delete(cp));
  await waitForHttp(`${cpUrl}/healthz`);

  const nodes: DemoNode[] = ['node-a', 'node-b', 'node-c'].map((id) => ({
    id,
    cacheDir: join(work, id, 'cache'),
    agent: undefined,
  }));
  for (const node of nodes) {
    mkdirSync(join(work, node.id), { recursive: true });
    await startAgent(node, cpUrl);
  }
  console.log(`Origin ${url}: 150 ms to first byte, 50 MB/s per connection`);
  console.log(`Control plane ${cpUrl} (SQLite, its own process), agents: ${nodes.map((n) => n.id).join(', ')}\n`);

  const rows: Row[] = [];
  const record = async (scenario: string, out: string, summary: FetchSummary, originBytes: number): Promise<void> => {
    const { peers } = bytesFrom(summary);
    rows.push({
      scenario,
      seconds: summary.seconds,
      originBytes,
      peerBytes: peers,
      sha256ok: (await sha256OfFile(out)) === digest,
    });
  };
  const [a, b] = nodes as [DemoNode, DemoNode, DemoNode];
  const out = (node: DemoNode, name: string): string => join(work, node.id, name);

  console.log('1. One connection (the sequential case)');
  origin.resetStats();
  const single = await loomFetch([url, '-o', join(work, 'one-connection.bin'), '--workers', '1', '--no-cache']);
  await record('1 connection', join(work, 'one-connection.bin'), single, origin.bytesServed);

  console.log('2. loom fetch with its defaults, node-a');
  origin.resetStats();
  const first = await loomFetch([
    url,
    '-o',
    out(a, 'model.safetensors'),
    '--cache-dir',
    a.cacheDir,
    '--control-plane',
    cpUrl,
    '--node-id',
    a.id,
  ]);
  await record('loom fetch, defaults', out(a, 'model.safetensors'), first, origin.bytesServed);

  console.log('3. The same fetch again on node-a (another container): a cache hit');
  origin.resetStats();
  const hit = await loomFetch([url, '-o', out(a, 'again.safetensors'), '--cache-dir', a.cacheDir]);
  await record('cache hit', out(a, 'again.safetensors'), hit, origin.bytesServed);

  console.log("4. node-b fetches it: from node-a's agent");
  origin.resetStats();
  const peer = await loomFetch([
    url,
    '-o',
    out(b, 'model.safetensors'),
    '--cache-dir',
    b.cacheDir,
    '--control-plane',
    cpUrl,
    '--node-id',
    b.id,
  ]);
  await record('2nd node, from a peer', out(b, 'model.safetensors'), peer, origin.bytesServed);

  console.log('5. Three fresh nodes start at once (caches emptied, agents restarted)');
  for (const node of nodes) {
    await stopAgent(node);
    rmSync(node.cacheDir, { recursive: true, force: true });
    await startAgent(node, cpUrl);
  }
  origin.resetStats();
  const started = performance.now();
  const fleet = await Promise.all(
    nodes.map((node) =>
      loomFetch([
        url,
        '-o',
        out(node, 'fleet.safetensors'),
        '--cache-dir',
        node.cacheDir,
        '--control-plane',
        cpUrl,
        '--node-id',
        node.id,
        '--progress',
        'none',
      ]),
    ),
  );
  const fleetSeconds = (performance.now() - started) / 1000;
  const fleetOk = (await Promise.all(nodes.map((node) => sha256OfFile(out(node, 'fleet.safetensors'))))).every(
    (d) => d === digest,
  );
  rows.push({
    scenario: '3 nodes at once',
    seconds: fleetSeconds,
    originBytes: origin.bytesServed,
    peerBytes: fleet.reduce((sum, s) => sum + bytesFrom(s).peers, 0),
    sha256ok: fleetOk,
  });

  printTable(rows, single.seconds);
  const bad = rows.filter((r) => !r.sha256ok);
  console.log(
    `\nsha256 ${digest}: ${bad.length === 0 ? 'every output verified' : `MISMATCH in ${bad.map((r) => r.scenario).join(', ')}`}`,
  );
  console.log(
    `Origin egress for the three nodes at once: ${(rows.at(-1)!.originBytes / SIZE).toFixed(2)} copies of the file.`,
  );
  if (bad.length) process.exitCode = 1;
}

try {
  console.log(`Working folder ${work}`);
  await main();
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await cleanup();
  console.log(`Stopped: ${childPids.length} processes (pids ${childPids.join(' ')}); removed ${work}`);
}
