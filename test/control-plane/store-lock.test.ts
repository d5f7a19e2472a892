// One control-plane process per SQLite file, enforced: the SQLite store keeps the nodes table
// in memory for locate, so a second process on the same file would answer with stale
// holders. A second `loom control-plane` on the file fails at once (exit 8,
// LOOM_ERR_STORE_LOCKED) while the first keeps serving; the lock is the kernel's, so a kill
// -9 frees the file for the next process, which serves what was stored.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { EXIT, StoreLockedError } from '../../src/core/errors.js';
import { collect, runLoom, startLoom, tempDir, waitFor, type RunResult } from '../helpers/fixtures.js';

const D1 = 'd'.repeat(64);
const PIECE = 'e'.repeat(64);

interface Running {
  child: ChildProcess;
  url: string;
  done: Promise<RunResult>;
}

const running: ChildProcess[] = [];
after(() => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** Starts `loom control-plane ARGS` on an ephemeral port; `banner` yields its address once it listens. */
function launch(args: string[]): { child: ChildProcess; done: Promise<RunResult>; banner: () => string | undefined } {
  const child = startLoom(['control-plane', '--listen', '127.0.0.1:0', ...args]);
  running.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return {
    child,
    done: collect(child),
    banner: () => /control plane on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)?.[1],
  };
}

/** A control plane that listens: waits for its banner's address. */
async function startControlPlane(args: string[]): Promise<Running> {
  const { child, done, banner } = launch(args);
  return { child, done, url: await waitFor('the banner', banner) };
}

/**
 * A control plane expected to fail at start: one that listens instead (the file was not
 * locked) is stopped, so the test fails on its exit code rather than hanging.
 */
async function startRefused(args: string[]): Promise<RunResult> {
  const { child, done, banner } = launch(args);
  await waitFor('an exit or a banner', () => child.exitCode !== null || banner() !== undefined, 30_000);
  if (child.exitCode === null) child.kill('SIGTERM');
  return done;
}

async function call(url: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

const peersOf = async (url: string) => {
  const res = await call(url, 'GET', `/v1/blobs/${D1}/peers`);
  return { status: res.status, ids: (res.body as { peers: Array<{ id: string }> }).peers.map((p) => p.id) };
};

describe('one control-plane process per SQLite file', () => {
  it('a second process on the file exits 8 saying who holds it; the first keeps serving; after a kill -9 the next one serves what was stored', async () => {
    const dir = tempDir();
    const db = join(dir, 'cp', 'registry.db');
    // A --store path's folder must exist (only the default store's folder is made).
    mkdirSync(join(dir, 'cp'));
    const flags = ['--store', `sqlite:${db}`, '--node-ttl', '10m'];
    const first = await startControlPlane(flags);
    assert.equal((await call(first.url, 'PUT', '/v1/nodes/holder', { url: 'http://holder.test:7071' })).status, 200);
    const manifest = { size: 4, pieceSize: 4, pieces: [PIECE], verifiedAgainst: 'sha256-pinned' };
    assert.equal((await call(first.url, 'PUT', `/v1/blobs/${D1}`, manifest)).status, 201);
    assert.equal((await call(first.url, 'PUT', `/v1/blobs/${D1}/replicas/holder`, { complete: true })).status, 200);

    const second = await startRefused(flags);
    assert.equal(second.code, EXIT.locked, second.stderr);
    assert.equal(second.code, 8);
    assert.equal(
      second.stderr,
      `loom: error: the SQLite store ${db} is in use by another process (pid ${first.child.pid}): ` +
        'one control plane per SQLite file; stop the other control plane, give this one another file ' +
        '(--store sqlite:PATH), or run several control planes on one Redis (--store redis://HOST:PORT/DB)\n',
    );
    assert.doesNotMatch(second.stderr, /control plane on/, 'it never listened');

    // The first is untouched: it still reads and writes.
    assert.deepEqual(await peersOf(first.url), { status: 200, ids: ['holder'] });
    assert.equal((await call(first.url, 'PUT', '/v1/nodes/late', { url: 'http://late.test:7071' })).status, 200);
    assert.equal((await call(first.url, 'PUT', `/v1/blobs/${D1}/replicas/late`, { complete: true })).status, 200);

    first.child.kill('SIGKILL');
    const killed = await first.done;
    assert.equal(killed.signal, 'SIGKILL');

    const third = await startControlPlane(flags);
    assert.deepEqual((await peersOf(third.url)).ids.sort(), ['holder', 'late']);
    assert.deepEqual(await call(third.url, 'GET', `/v1/blobs/${D1}`), {
      status: 200,
      body: { digest: D1, ...manifest },
    });
    third.child.kill('SIGTERM');
    const stopped = await third.done;
    assert.equal(stopped.code, 0, stopped.stderr);
  });

  it('the default store under --cache-dir: its lock file leaves the folder a Loom cache', async () => {
    const root = join(tempDir(), 'cache');
    const first = await startControlPlane(['--cache-dir', root]);
    const second = await startRefused(['--cache-dir', root]);
    assert.equal(second.code, 8, second.stderr);
    assert.match(second.stderr, /the SQLite store .*control-plane\.db is in use by another process \(pid \d+\)/);
    assert.equal((await call(first.url, 'GET', '/readyz')).status, 200);
    first.child.kill('SIGTERM');
    assert.equal((await first.done).code, 0);
    assert.deepEqual(readdirSync(root).sort(), ['control-plane.db', 'control-plane.db-lock']);
    const ls = await runLoom(['cache', 'ls', '--cache-dir', root]);
    assert.equal(ls.code, 0, ls.stderr);
  });
});

describe('SqliteStore in one process', () => {
  const dir = tempDir();

  it('refuses a second store on an open file, and opens it again once the first is closed', async () => {
    const path = join(dir, 'twice.db');
    const store = new SqliteStore(path);
    const now = Date.now();
    await store.heartbeat(
      { id: 'n1', url: 'http://n1:1', zone: undefined, freeUploadSlots: 1, expiresAt: now + 60_000, epoch: undefined },
      now,
    );
    assert.throws(
      () => new SqliteStore(path),
      (err: unknown) =>
        err instanceof StoreLockedError &&
        err.code === 'LOOM_ERR_STORE_LOCKED' &&
        err.path === path &&
        err.message.includes(`in use by another store in this process (pid ${process.pid})`),
    );
    // The refused store left the first one's lock alone (closing any descriptor of a file
    // drops this process's POSIX locks on it): another process is refused too.
    assert.throws(() => new SqliteStore(path), StoreLockedError);
    const other = await startRefused(['--store', `sqlite:${path}`]);
    assert.equal(other.code, 8, other.stderr);
    assert.match(other.stderr, new RegExp(`in use by another process \\(pid ${process.pid}\\)`));
    await store.close();
    const again = new SqliteStore(path);
    assert.deepEqual(
      (await again.liveNodes(Date.now())).map((n) => n.id),
      ['n1'],
    );
    await again.close();
    assert.equal(existsSync(`${path}-wal`), false);
  });

  it('opens stores on different files, and in memory, side by side', async () => {
    const stores = [
      new SqliteStore(join(dir, 'a.db')),
      new SqliteStore(join(dir, 'b.db')),
      new SqliteStore(':memory:'),
      new SqliteStore(':memory:'),
    ];
    for (const store of stores) await store.ping();
    for (const store of stores) await store.close();
  });
});
