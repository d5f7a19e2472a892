// Fixtures for the agent's tests: a node cache with complete blobs and downloads in progress
// (the .part file and its pieces.json, written the way the cache writes them), and raw HTTP
// requests that keep a path exactly as given.
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { ensureLayout } from '../../src/cache/blob-store.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { openCache } from '../../src/cache/cache-admin.js';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { Agent } from '../../src/peer/agent.js';
import { sha256Of, tempDir, waitFor } from '../helpers/fixtures.js';

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
