// The SQLite store's WAL is checkpointed by a thread of its own, not inside a request's
// commit: what the store writes reaches the database file within a few checkpoint rounds
// (SQLite's automatic checkpoint waited for 1,000 pages of WAL, and then ran in the commit
// that filled it, on the event loop), and closing the store still leaves one file that
// holds everything.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { collect, startLoom, waitFor } from '../helpers/fixtures.js';
import { freePort } from '../helpers/redis.js';
import { dir } from './harness.js';

const LONG = 3_600_000;

async function beat(store: SqliteStore, id: string, url: string): Promise<void> {
  const now = Date.now();
  await store.heartbeat({ id, url, zone: 'zone-a', freeUploadSlots: 2, expiresAt: now + LONG, epoch: undefined }, now);
}

/** Whether the database file itself (not its WAL) holds `marker`. */
function inDatabaseFile(path: string, marker: string): boolean {
  return readFileSync(path).includes(marker);
}

describe('SQLite store checkpoints', () => {
  const stores: SqliteStore[] = [];
  after(async () => {
    for (const store of stores) await store.close();
  });

  it('copies a write into the database file while the store is open, without waiting for 1,000 pages of WAL', async () => {
    const path = join(dir, 'checkpoint.db');
    const store = new SqliteStore(path);
    stores.push(store);
    const marker = `http://checkpoint-marker-${process.pid}.example:7071`;
    await beat(store, 'marked', marker);
    assert.ok(existsSync(`${path}-wal`), 'the store writes ahead to a WAL');
    // A few rounds of the checkpoint thread (every 250 ms); generous for a loaded machine.
    for (let i = 0; i < 100 && !inDatabaseFile(path, marker); i++) await sleep(100);
    assert.ok(inDatabaseFile(path, marker), 'the heartbeat reached the database file');
    assert.equal(store.checkpointError, undefined);
    const nodes = await store.liveNodes(Date.now());
    assert.deepEqual(
      nodes.map((n) => [n.id, n.url]),
      [['marked', marker]],
    );
  });

  it('keeps every write across a close and a reopen, with no WAL left behind', async () => {
    const path = join(dir, 'reopen.db');
    const store = new SqliteStore(path);
    for (let i = 0; i < 500; i++) await beat(store, `node-${i}`, `http://10.0.${i >> 8}.${i & 255}:7071`);
    await store.close();
    assert.equal(existsSync(`${path}-wal`), false, 'the last connection to close removes the WAL');
    const again = new SqliteStore(path);
    stores.push(again);
    const nodes = await again.liveNodes(Date.now());
    assert.equal(nodes.length, 500);
    assert.equal(nodes.find((n) => n.id === 'node-321')?.url, 'http://10.0.1.65:7071');
  });

  for (const log of [true, false])
    it(`says once, ${log ? 'in the --log log' : 'on stderr without --log'} and on /metrics, that a checkpoint fails, and again once it works`, async () => {
      // A real failure: the control plane's file-size limit (RLIMIT_FSIZE, set on the running
      // process with prlimit) is lowered to the database file's size, so the checkpoint that
      // must grow the file gets EFBIG; the WAL's writes stay below it and requests still work.
      mkdirSync(join(dir, `fsize-${log}`), { recursive: true });
      const path = join(dir, `fsize-${log}`, 'registry.db');
      const port = await freePort();
      const child = startLoom([
        'control-plane',
        '--listen',
        `127.0.0.1:${port}`,
        '--store',
        `sqlite:${path}`,
        ...(log ? ['--log'] : []),
      ]);
      const run = collect(child);
      after(() => child.kill('SIGKILL'));
      const base = `http://127.0.0.1:${port}`;
      await waitFor('listening', async () => ((await fetch(`${base}/healthz`)).ok ? true : undefined), 30_000);
      const beat = async (id: string, url: string) => {
        const res = await fetch(`${base}/v1/nodes/${id}`, {
          method: 'PUT',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ url }),
        });
        assert.equal(res.status, 200, await res.text());
      };
      const failing = async () =>
        /^loom_cp_store_checkpoint_failing (\d)$/m.exec(await (await fetch(`${base}/metrics`)).text())?.[1];
      // pino's JSON lines on stdout with --log, else loom's lines on stderr, as they come.
      let said = '';
      (log ? child.stdout! : child.stderr!).on('data', (d: Buffer) => (said += d.toString()));
      const logLines = () => said.split('\n').filter((line) => line.includes('checkpoint'));

      // A database file of some size, every write of it checkpointed (the WAL then starts over).
      const padding = 'x'.repeat(900);
      for (let i = 0; i < 600; i++) await beat(`before-${i}`, `http://before-${i}.example:7071/${padding}`);
      const lastBefore = `http://before-599.example:7071/${padding}`;
      await waitFor('the checkpoint of the first writes', () => inDatabaseFile(path, lastBefore), 30_000);
      assert.equal(await failing(), '0');

      const size = statSync(path).size;
      execFileSync('prlimit', ['--pid', String(child.pid), `--fsize=${size}:`]);
      // New pages: the database file must grow past the limit to take them.
      for (let i = 0; i < 20; i++) await beat(`after-${i}`, `http://after-${i}.example:7071/${padding}`);
      await waitFor('the failing gauge', async () => (await failing()) === '1', 30_000);
      const errors = await waitFor('the error line', () => (logLines().length > 0 ? logLines() : undefined));
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.match(errors[0]!, log ? /"level":50/ : /^loom: warning: /);
      assert.match(errors[0]!, /the SQLite store cannot checkpoint its WAL \(retrying\): .*(full|disk I\/O error)/);
      assert.equal(statSync(path).size, size, 'nothing was written past the limit');

      execFileSync('prlimit', ['--pid', String(child.pid), '--fsize=unlimited:']);
      await waitFor('the failing gauge back at 0', async () => (await failing()) === '0', 30_000);
      const lines = logLines();
      assert.equal(
        lines.length,
        2,
        `one error while it failed (every 250 ms), one line when it worked:\n${lines.join('\n')}`,
      );
      assert.match(
        lines[1]!,
        log
          ? /"level":30.*the SQLite store checkpoints its WAL again/
          : /^loom: the SQLite store checkpoints its WAL again$/,
      );
      await waitFor('the later writes in the database file', () => inDatabaseFile(path, 'after-19.example'), 30_000);

      child.kill('SIGTERM');
      assert.equal((await run).code, 0);
    });
});
