// A control plane that refuses a node's token (401/403) is a misconfiguration, not an absent
// control plane: `loom fetch` says so (stderr and --json `controlPlaneError`) and goes on from
// the origin (or fails with --no-origin); `loom agent` says so once and fails /readyz with the
// reason while /healthz stays up. And an agent that cannot write its cache root says who it
// runs as and what to do (a root-owned hostPath under an image that runs as a user).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { nodeToken } from '../../src/control-plane/client.js';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { OriginServer } from '../support/origin-server.js';
import {
  collect,
  LOOM_BIN,
  randomContent,
  runLoom,
  sha256Of,
  sha256OfFile,
  startLoom,
  tempDir,
  waitFor,
} from '../helpers/fixtures.js';
import { freePort } from '../helpers/redis.js';
import { Agent } from '../../src/peer/agent.js';
import { makeCache, putBlob } from './peer-fixtures.js';

const dir = tempDir('loom-refused-');
const secret = 'cluster-secret-0123456789abcdef';
const admin = 'admin-token-0123456789abcdef';
const content = randomContent(2 * 1024 * 1024 + 5);
const children: ChildProcess[] = [];
const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const close of closers) await close();
});

/** A control plane as deploy/kubernetes/control-plane.yaml runs it: admin token, cluster secret, closed reads. */
async function startCp(): Promise<string> {
  const store = new SqliteStore(join(dir, `cp-${closers.length}.db`));
  const app = await buildControlPlane({ store, token: admin, clusterSecret: secret, nodeTtlMs: 3_000 });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(async () => {
    await app.close();
    await store.close();
  });
  return url;
}

async function startOrigin(): Promise<OriginServer> {
  const origin = await new OriginServer().listen();
  closers.push(() => origin.close());
  origin.setFile('/m.bin', content.bytes);
  return origin;
}

interface Summary {
  ok: boolean;
  controlPlaneError?: { code: string; status: number | null; message: string };
  error?: { code: string; message: string };
}

describe('loom fetch against a control plane that refuses its token', () => {
  it('says the token was refused (stderr and --json), and fetches from the origin', async () => {
    const [cp, origin] = await Promise.all([startCp(), startOrigin()]);
    const out = join(dir, 'a', 'm.bin');
    const run = await runLoom(
      ['fetch', origin.url('/m.bin'), '-o', out, '--control-plane', cp, '--node-id', 'node-a', '--json'],
      { LOOM_CACHE_DIR: join(dir, 'cache-a') },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(origin.bytesServed, content.bytes.length);
    assert.match(
      run.stderr,
      /^loom: warning: the control plane refused this node's token \(HTTP 401: missing bearer token.*\): fetching from the origin alone, without peers; give --token-file FILE \(or LOOM_TOKEN\) with node node-a's token/m,
    );
    assert.doesNotMatch(run.stderr, /did not answer as one/);
    const summary = JSON.parse(run.stdout) as Summary;
    assert.equal(summary.ok, true);
    assert.equal(summary.controlPlaneError?.code, 'LOOM_ERR_UNAUTHORIZED');
    assert.equal(summary.controlPlaneError?.status, 401);
    assert.match(summary.controlPlaneError?.message ?? '', /refused this node's token/);
  });

  it('fails with --no-origin, naming the refusal (exit 2), before any byte', async () => {
    const [cp, origin] = await Promise.all([startCp(), startOrigin()]);
    const run = await runLoom(
      [
        'fetch',
        origin.url('/m.bin'),
        '-o',
        join(dir, 'b.bin'),
        '--control-plane',
        cp,
        '--node-id',
        'node-b',
        '--no-origin',
      ],
      { LOOM_CACHE_DIR: join(dir, 'cache-b'), LOOM_TOKEN: nodeToken('another-secret-0123456789', 'node-b') },
    );
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /^loom: error: the control plane refused this node's token \(HTTP 401: .*\) and --no-origin forbids the origin; check that --token-file \(or LOOM_TOKEN\) holds node node-b's token/m,
    );
    assert.equal(origin.requests.length, 0);
  });

  it("with the node's own token: no warning, no controlPlaneError", async () => {
    const [cp, origin] = await Promise.all([startCp(), startOrigin()]);
    const out = join(dir, 'c.bin');
    const tokenFile = join(dir, 'node-c-token');
    writeFileSync(tokenFile, `${nodeToken(secret, 'node-c')}\n`);
    const run = await runLoom(
      [
        'fetch',
        origin.url('/m.bin'),
        '-o',
        out,
        '--control-plane',
        cp,
        '--node-id',
        'node-c',
        '--token-file',
        tokenFile,
        '--json',
      ],
      { LOOM_CACHE_DIR: join(dir, 'cache-c') },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.doesNotMatch(run.stderr, /warning/);
    assert.equal((JSON.parse(run.stdout) as Summary).controlPlaneError, undefined);
  });
});

async function refusals(cp: string): Promise<number> {
  const text = await (await fetch(`${cp}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n'))
    if (line.startsWith('loom_cp_http_requests_total') && line.includes('status="401"'))
      total += Number(line.split(' ').pop());
  return total;
}

describe('loom agent whose token the control plane refuses', () => {
  it('fails /readyz with the reason, keeps /healthz, and says it once', { timeout: 30_000 }, async () => {
    const cp = await startCp();
    const port = await freePort();
    const child = startLoom(['agent', '--listen', `127.0.0.1:${port}`, '--node-id', 'node-d', '--control-plane', cp], {
      LOOM_CACHE_DIR: join(dir, 'cache-d'),
    });
    children.push(child);
    const done = collect(child);
    // Three heartbeats refused (1 s, then 2 s apart): the line is said once, not per retry.
    await waitFor('three refused heartbeats', async () => (await refusals(cp)) >= 3, 15_000);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    assert.equal(ready.status, 503);
    const body = (await ready.json()) as { ok: boolean; error: { code: string; message: string } };
    assert.equal(body.ok, false);
    assert.equal(body.error.code, 'LOOM_ERR_UNAUTHORIZED');
    assert.match(
      body.error.message,
      /refused this node's token \(HTTP 401: .*give --token-file FILE \(or LOOM_TOKEN\)/,
    );
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    child.kill('SIGTERM');
    const result = await done;
    assert.equal(result.stderr.match(/refused this node's token/g)?.length, 1, result.stderr);
  });

  it("answers /readyz 200 once the node's own token is accepted", { timeout: 30_000 }, async () => {
    const cp = await startCp();
    const port = await freePort();
    const tokenFile = join(dir, 'node-e-token');
    writeFileSync(tokenFile, nodeToken(secret, 'node-e'));
    const child = startLoom(
      [
        'agent',
        '--listen',
        `127.0.0.1:${port}`,
        '--node-id',
        'node-e',
        '--control-plane',
        cp,
        '--token-file',
        tokenFile,
      ],
      { LOOM_CACHE_DIR: join(dir, 'cache-e') },
    );
    children.push(child);
    const done = collect(child);
    await waitFor('ready', async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200);
    child.kill('SIGTERM');
    assert.equal((await done).code, 0);
  });
});

describe("an agent with its node's own token", () => {
  it('publishes its cached manifests (a path that names no node needs X-Loom-Node)', async () => {
    const cp = await startCp();
    const root = await makeCache();
    const bytes = Buffer.from(content.bytes.subarray(0, 3 * 1024));
    const digest = await putBlob(root, bytes);
    const pieces = [0, 1, 2].map((i) => sha256Of(bytes.subarray(i * 1024, (i + 1) * 1024)));
    mkdirSync(join(root, 'manifests'));
    writeFileSync(
      join(root, 'manifests', `${digest}.json`),
      JSON.stringify({ digest, size: bytes.length, pieceSize: 1024, pieces, verifiedAgainst: 'sha256-pinned' }),
    );
    const logs: string[] = [];
    const agent = await Agent.start({
      controlPlane: cp,
      cacheRoot: root,
      nodeId: 'node-g',
      listen: { host: '127.0.0.1', port: 0 },
      token: nodeToken(secret, 'node-g'),
      log: (_level, message) => logs.push(message),
    });
    closers.push(() => agent.stop(0));
    const manifest = await waitFor('manifest published', async () => {
      const res = await fetch(`${cp}/v1/blobs/${digest}`, { headers: { authorization: `Bearer ${admin}` } });
      return res.ok && ((await res.json()) as { pieces: string[] });
    });
    assert.deepEqual(manifest.pieces, pieces);
    assert.deepEqual(
      logs.filter((line) => /refused/.test(line)),
      [],
    );
  });
});

describe('loom agent on a cache root it cannot write', () => {
  it('exits 6 saying which uid it runs as and what to do', { timeout: 30_000 }, async () => {
    const parent = tempDir('loom-root-owned-');
    chmodSync(parent, 0o755);
    const root = join(parent, 'cache');
    mkdirSync(root);
    // As a DaemonSet's hostPath: created by someone else (root, 0755), the agent runs as a user.
    // Run as root, the test runs the agent as nobody; run as a user, it takes the write bit away.
    const asRoot = process.getuid?.() === 0;
    chmodSync(root, asRoot ? 0o755 : 0o555);
    const uid = asRoot ? 65534 : process.getuid!();
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        LOOM_BIN,
        'agent',
        '--listen',
        `127.0.0.1:${port}`,
        '--control-plane',
        'http://127.0.0.1:9',
        '--cache-dir',
        root,
      ],
      {
        env: { ...process.env, HOME: dir, LOOM_NODE_ID: 'node-f' },
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(asRoot && { uid, gid: 65534 }),
      },
    );
    children.push(child);
    const result = await collect(child);
    assert.equal(result.code, 6, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(
        `^loom: error: cache ${root} is not usable: permission denied while creating the cache in it; this process runs as uid ${uid} .*cannot write into ${root}, owned by uid \\d+ gid \\d+ with mode 0[57]55: make it writable for uid ${uid} \\(\`chown ${uid}:`,
      ),
    );
  });
});
