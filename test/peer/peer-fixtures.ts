// Fixtures for the agent's tests: a node cache with complete blobs and downloads in progress
// (the .part file and its pieces.json, written the way the cache writes them), raw HTTP
// requests that keep a path exactly as given, and a fleet's parts for peer tests (control
// plane, agents, a stand-in lease holder, a front that logs or answers control-plane requests).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after } from 'node:test';
import { ensureLayout } from '../../src/cache/blob-store.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { openCache } from '../../src/cache/cache-admin.js';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { sourceBlobId } from '../../src/cache/source-id.js';
import { sourceKey } from '../../src/cache/source-key.js';
import { Agent } from '../../src/peer/agent.js';
import { fetchCached } from '../../src/cache/cached-fetch.js';
import { PeerPlanner } from '../../src/peer/peer-download.js';
import { OriginServer } from '../support/origin-server.js';
import { collect, sha256Of, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';

export async function makeCache(): Promise<string> {
  const root = join(tempDir('loom-agent-'), 'cache');
  await ensureLayout(cacheLayout(root));
  return root;
}

/** Puts a complete blob in the cache (file and index row, as a finished fetch leaves it). */
export async function putBlob(root: string, bytes: Buffer): Promise<string> {
  const digest = sha256Of(bytes);
  const path = join(cacheLayout(root).blobs, digest);
  writeFileSync(path, bytes);
  chmodSync(path, 0o444);
  const cache = await openCache(root);
  try {
    cache.index.recordFetch(`https://models.example/${digest}`, digest, bytes.length, {});
  } finally {
    cache.close();
  }
  return digest;
}

export interface PartialFixture {
  digest: string;
  pieceSize: number;
  pieces: string[];
  /** Rewrites pieces.json with another verified list (atomically, like the cache). */
  setVerified(verified: number[]): void;
}

/** A download in progress: `partBytes` of `bytes` on disk (default all), `verified` pieces listed. */
export function putPartial(
  root: string,
  bytes: Buffer,
  pieceSize: number,
  verified: number[],
  partBytes = bytes.length,
): PartialFixture {
  const { tmp } = cacheLayout(root);
  mkdirSync(tmp, { recursive: true });
  const digest = sha256Of(bytes);
  const pieces: string[] = [];
  for (let at = 0; at < bytes.length; at += pieceSize)
    pieces.push(
      createHash('sha256')
        .update(bytes.subarray(at, at + pieceSize))
        .digest('hex'),
    );
  const part = Buffer.alloc(bytes.length);
  bytes.copy(part, 0, 0, partBytes);
  writeFileSync(join(tmp, `${digest}.part`), part.subarray(0, Math.max(partBytes, 0)));
  const setVerified = (list: number[]): void => {
    const file = join(tmp, `${digest}.pieces.json`);
    const temp = `${file}.tmp-${process.pid}`;
    writeFileSync(temp, JSON.stringify({ digest, size: bytes.length, pieceSize, pieces, verified: list }));
    renameSync(temp, file);
  };
  setVerified(verified);
  return { digest, pieceSize, pieces, setVerified };
}

export interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request with the path sent exactly as written (fetch would normalise `..` away). */
export function rawRequest(
  base: string,
  path: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<RawAnswer> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: hostname, port, path, method: options.method ?? 'GET', headers: options.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

export function errorOf(answer: RawAnswer): { code?: string; message: string } {
  return (JSON.parse(answer.body.toString()) as { error: { code?: string; message: string } }).error;
}

/** Things a peer test starts and must stop, in reverse order (agents before their caches). */
export type Closers = Array<() => Promise<unknown> | unknown>;

/** A test file's closers, run in reverse order once all its tests are done. */
export function closersRunAfterAll(): Closers {
  const closers: Closers = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });
  return closers;
}

/** One JSON request to the control plane; anything but a 2xx fails the test, naming the call. */
export async function controlPlaneRequest(cp: string, method: string, path: string, body: unknown): Promise<Response> {
  const res = await fetch(`${cp}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status}`);
  return res;
}

/** Waits until `node` has announced at least one verified piece of `blobId` to the control plane. */
export async function waitForFirstPiece(cp: string, blobId: string, node: string, timeoutMs: number): Promise<void> {
  await waitFor(
    `the ${node} announcing its first piece`,
    async () => {
      const res = await fetch(`${cp}/v1/blobs/${blobId}/peers`);
      const peers = ((await res.json()) as { peers?: Array<{ id: string; pieces: number[] | null }> }).peers ?? [];
      return peers.some((p) => p.id === node && (p.pieces?.length ?? 0) > 0);
    },
    timeoutMs,
  );
}

export interface StandInLeaseHolder {
  /** The source's blob id, under which the lease is held and the pieces are served. */
  blobId: string;
  /** The lease's token. */
  token: string;
  /** Every piece's sha256, published or not. */
  pieces: string[];
  /** Serves the whole blob at /v1/blobs/:blobId. */
  server: OriginServer;
  /** Lets the lease lapse (the holder died), or ends the renewals once a test is done. */
  stopRenewing(): void;
  /** Publishes the blob as the holder does once done: its manifest (`pieces`, by default the
   *  true ones) and the source's mapping to `digest`. */
  publish(digest: string, pieces?: string[]): Promise<void>;
}

/**
 * A node fetching `url` from the origin for the fleet, played by the test: it takes the
 * source's lease, renews it every 300 ms, publishes the digests of the first `publishedPieces`
 * pieces (all by default), serves the whole blob, and announces itself as a partial holder of
 * `announced` pieces.
 */
export async function standInLeaseHolder(options: {
  cp: string;
  url: string;
  content: Buffer;
  pieceSize: number;
  closers: Closers;
  node?: string;
  publishedPieces?: number;
  announced: number[];
}): Promise<StandInLeaseHolder> {
  const { cp, url, content, pieceSize, closers, node = 'holder', announced } = options;
  const key = sourceKey(url);
  const blobId = sourceBlobId(key);
  const lease = (await (await controlPlaneRequest(cp, 'POST', `/v1/blobs/${blobId}/leases`, { node })).json()) as {
    token: string;
  };
  const renew = setInterval(() => void fetch(`${cp}/v1/blobs/${blobId}/leases/${lease.token}`, { method: 'PUT' }), 300);
  const stopRenewing = (): void => clearInterval(renew);
  closers.push(stopRenewing);
  const pieces: string[] = [];
  for (let at = 0; at < content.length; at += pieceSize) pieces.push(sha256Of(content.subarray(at, at + pieceSize)));
  await controlPlaneRequest(cp, 'PUT', `/v1/sources/${blobId}/pieces`, {
    lease: lease.token,
    size: content.length,
    pieceSize,
    pieces: pieces.slice(0, options.publishedPieces ?? pieces.length),
  });
  const server = await new OriginServer().listen();
  closers.push(() => server.close());
  server.setFile(`/v1/blobs/${blobId}`, content);
  await controlPlaneRequest(cp, 'PUT', `/v1/nodes/${node}`, { url: server.origin, freeUploadSlots: 4 });
  await controlPlaneRequest(cp, 'PUT', `/v1/blobs/${blobId}/replicas/${node}`, { complete: false, pieces: announced });
  const publish = async (digest: string, published = pieces): Promise<void> => {
    await controlPlaneRequest(cp, 'PUT', `/v1/blobs/${digest}`, {
      size: content.length,
      pieceSize,
      pieces: published,
      verifiedAgainst: 'first-origin-fetch',
    });
    await controlPlaneRequest(cp, 'PUT', '/v1/sources', { key, digest, lease: lease.token });
  };
  return { blobId, token: lease.token, pieces, server, stopRenewing, publish };
}

/** A control plane on SQLite in memory, leases of 2 s; stopped by `closers` (or `close`). */
export async function startTestControlPlane(closers: Closers): Promise<{ url: string; close: () => Promise<void> }> {
  const store = new SqliteStore(':memory:');
  const app = await buildControlPlane({ store, leaseTtlMs: 2_000 });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await app.close();
    await store.close();
  };
  closers.push(close);
  return { url, close };
}

/**
 * A node's agent as its own `loom agent` process (to be killed with -9 like a node), registered
 * with the control plane before it returns; `ended` is its exit.
 */
export async function startCliAgent(
  closers: Closers,
  cp: string,
  id: string,
  cacheDir: string,
): Promise<{ agent: ChildProcess; ended: ReturnType<typeof collect> }> {
  const agent = startLoom([
    'agent',
    '--control-plane',
    cp,
    '--listen',
    '127.0.0.1:0',
    '--node-id',
    id,
    '--cache-dir',
    cacheDir,
  ]);
  const ended = collect(agent);
  closers.push(() => agent.kill('SIGKILL'));
  await waitFor(
    `the ${id} agent registered`,
    async () => {
      const res = await fetch(`${cp}/v1/nodes`);
      return ((await res.json()) as { nodes: Array<{ id: string }> }).nodes.some((n) => n.id === id);
    },
    20_000,
  );
  return { agent, ended };
}

/** A node's agent over `cacheDir`, registered with the control plane before it returns. */
export async function startTestAgent(closers: Closers, cp: string, id: string, cacheDir: string): Promise<Agent> {
  const agent = await Agent.start({
    controlPlane: cp,
    cacheRoot: cacheDir,
    nodeId: id,
    listen: { host: '127.0.0.1', port: 0 },
    scanIntervalMs: 200,
    log: () => undefined,
  });
  closers.push(() => agent.stop(0));
  await waitFor(`${id} registered`, () => agent.isRegistered);
  return agent;
}

export interface FollowerScene {
  /** Serves the blob at /models/m.bin (`url`); counts what a follower took from it. */
  origin: OriginServer;
  url: string;
  cp: string;
  holder: StandInLeaseHolder;
}

/**
 * A follower's fleet: an origin serving `content`, a control plane, the agent of node
 * `follower` (its cache in `dir`/follower) and a stand-in lease holder fetching the blob.
 */
export async function startFollowerScene(options: {
  closers: Closers;
  dir: string;
  content: Buffer;
  pieceSize: number;
  publishedPieces?: number;
  announced: number[];
}): Promise<FollowerScene> {
  const { closers, dir, content } = options;
  const origin = await new OriginServer().listen();
  closers.push(() => origin.close());
  origin.setFile('/models/m.bin', content);
  const url = origin.url('/models/m.bin');
  const cp = (await startTestControlPlane(closers)).url;
  await startTestAgent(closers, cp, 'follower', join(dir, 'follower'));
  const holder = await standInLeaseHolder({ ...options, cp, url });
  return { origin, url, cp, holder };
}

/**
 * `fetchOn(nodeId, cacheDir, url, cp)`: a fetch through the node cache with peers found through
 * control plane `cp` (short waits and retries for tests), to a new file in `dir`; resolves to its path.
 */
export function peerFetcher(
  dir: string,
): (nodeId: string, cacheDir: string, url: string, cp: string) => Promise<string> {
  let outs = 0;
  return (nodeId, cacheDir, url, cp) => {
    const out = join(dir, `out-${++outs}.bin`);
    return fetchCached(url, out, {
      cacheDir,
      planner: new PeerPlanner({ controlPlane: cp, nodeId, followerWaitMs: 3_000, publishWaitMs: 10_000 }),
      retryBaseDelay: 5,
      retryMaxDelay: 50,
    }).then(() => out);
  };
}

/**
 * A front for control plane `cp`: logs each request as `METHOD path` and passes it through,
 * unless `answer` answers it itself (status and JSON body). Stopped by `closers`.
 */
export async function controlPlaneFront(
  cp: string,
  closers: Closers,
  answer: (method: string, path: string) => { status: number; body: unknown } | undefined = () => undefined,
): Promise<{ url: string; log: string[] }> {
  const log: string[] = [];
  const server = http.createServer((req, res) => {
    log.push(`${req.method} ${req.url}`);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const own = answer(req.method ?? 'GET', req.url ?? '/');
      if (own) {
        res.writeHead(own.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(own.body));
        return;
      }
      const headers = Object.fromEntries(
        Object.entries(req.headers).filter(([name]) => !['host', 'connection', 'content-length'].includes(name)),
      ) as Record<string, string>;
      const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
      fetch(`${cp}${req.url}`, { method: req.method, headers, body })
        .then(async (passed) => {
          res.writeHead(passed.status, { 'content-type': passed.headers.get('content-type') ?? 'application/json' });
          res.end(Buffer.from(await passed.arrayBuffer()));
        })
        .catch(() => res.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, log };
}
