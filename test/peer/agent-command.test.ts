// `loom agent` as a process (the built binary) against a real control plane: it announces
// the cache given by LOOM_CACHE_DIR, exits 0 deregistered on SIGTERM, needs a token from
// peers when it has one, and a node killed and restarted on an empty cache is not
// advertised with its old blobs.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane } from '../../src/control-plane/server.js';
import { collect, runLoom, sha256Of, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { freePort } from '../helpers/redis.js';
import { makeCache, putBlob } from './peer-fixtures.js';

const dir = tempDir();
const children: ChildProcess[] = [];
const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const close of closers) await close();
});

async function startCp(token?: string): Promise<string> {
  const store = new SqliteStore(join(dir, `cp-${closers.length}.db`));
  const app = await buildControlPlane({ store, token, openReads: true, nodeTtlMs: 3_000 });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(async () => {
    await app.close();
    await store.close();
  });
  return url;
}

async function peerIds(cp: string, digest: string): Promise<string[]> {
  const res = await fetch(`${cp}/v1/blobs/${digest}/peers`);
  return ((await res.json()) as { peers: Array<{ id: string }> }).peers.map((p) => p.id);
}

async function nodeUrls(cp: string): Promise<Record<string, string>> {
  const res = await fetch(`${cp}/v1/nodes`);
  const { nodes } = (await res.json()) as { nodes: Array<{ id: string; url: string }> };
  return Object.fromEntries(nodes.map((n) => [n.id, n.url]));
}

function agentProcess(
  args: string[],
  env: NodeJS.ProcessEnv,
): { child: ChildProcess; done: ReturnType<typeof collect> } {
  const child = startLoom(['agent', ...args], env);
  children.push(child);
  return { child, done: collect(child) };
}

describe('loom agent', () => {
  it('announces the cache from the environment, and on SIGTERM deregisters and exits 0', async () => {
    const cp = await startCp();
    const cache = await makeCache();
    const digest = await putBlob(cache, randomBytes(50_000));
    const port = await freePort();
    const { child, done } = agentProcess(['--listen', `127.0.0.1:${port}`], {
      LOOM_CONTROL_PLANE: cp,
      LOOM_NODE_ID: 'env-node',
      LOOM_CACHE_DIR: cache,
    });
    await waitFor('announced', async () => (await peerIds(cp, digest)).includes('env-node'));
    assert.equal((await nodeUrls(cp))['env-node'], `http://127.0.0.1:${port}`);
    const res = await fetch(`http://127.0.0.1:${port}/v1/blobs/${digest}`);
    assert.equal(sha256Of(Buffer.from(await res.arrayBuffer())), digest);

    child.kill('SIGTERM');
    const result = await done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /deregistered env-node/);
    assert.deepEqual(await nodeUrls(cp), {});
    assert.deepEqual(await peerIds(cp, digest), []);
  });

  it('uses its token with the control plane, requires it from peers, and advertises --advertise', async () => {
    const token = 's'.repeat(32);
    const cp = await startCp(token);
    const cache = await makeCache();
    const digest = await putBlob(cache, randomBytes(1000));
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${token}\n`);
    const port = await freePort();
    const { child, done } = agentProcess(
      [
        '--control-plane',
        cp,
        '--listen',
        `127.0.0.1:${port}`,
        '--node-id',
        'tok-node',
        '--token-file',
        tokenFile,
        '--cache-dir',
        cache,
        '--advertise',
        'http://gpu-7.example:7071/',
        '--zone',
        'eu-1a',
      ],
      {},
    );
    await waitFor('announced with the token', async () => (await peerIds(cp, digest)).includes('tok-node'));
    assert.equal((await nodeUrls(cp))['tok-node'], 'http://gpu-7.example:7071');
    const url = `http://127.0.0.1:${port}/v1/blobs/${digest}`;
    assert.equal((await fetch(url)).status, 401);
    const authorized = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(authorized.status, 200);
    assert.equal(sha256Of(Buffer.from(await authorized.arrayBuffer())), digest);
    child.kill('SIGINT');
    assert.equal((await done).code, 0);
    assert.deepEqual(await nodeUrls(cp), {});
  });

  it('a node killed and restarted with an empty cache is not advertised with its old blobs', async () => {
    const cp = await startCp();
    const full = await makeCache();
    const digest = await putBlob(full, randomBytes(1000));
    const env = { LOOM_CONTROL_PLANE: cp, LOOM_NODE_ID: 'crashy' };
    const first = agentProcess(['--listen', `127.0.0.1:${await freePort()}`, '--cache-dir', full], env);
    await waitFor('announced', async () => (await peerIds(cp, digest)).includes('crashy'));
    first.child.kill('SIGKILL');
    await first.done;

    const empty = await makeCache();
    const port = await freePort();
    const second = agentProcess(['--listen', `127.0.0.1:${port}`, '--cache-dir', empty], env);
    await waitFor('back', async () => (await nodeUrls(cp)).crashy === `http://127.0.0.1:${port}`);
    assert.deepEqual(await peerIds(cp, digest), []);
    second.child.kill('SIGTERM');
    assert.equal((await second.done).code, 0);
  });

  it('refuses to start without a control plane or with a bad flag (exit 2)', async () => {
    const none = await runLoom(['agent', '--listen', '127.0.0.1:0'], { LOOM_CONTROL_PLANE: '' });
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no control plane given.*--control-plane/);
    const uploads = await runLoom(['agent', '--control-plane', 'http://127.0.0.1:1', '--max-uploads', '0']);
    assert.equal(uploads.code, 2);
    assert.match(uploads.stderr, /--max-uploads/);
    const id = await runLoom(['agent', '--control-plane', 'http://127.0.0.1:1', '--node-id', 'a/b']);
    assert.equal(id.code, 2);
    assert.match(id.stderr, /node id "a\/b" is not valid/);
    const url = await runLoom(['agent', '--control-plane', 'ftp://x']);
    assert.equal(url.code, 2);
  });
});
