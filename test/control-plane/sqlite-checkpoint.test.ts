// The SQLite store's WAL is checkpointed by a thread of its own, not inside a request's
// commit: what the store writes reaches the database file within a few checkpoint rounds
// (SQLite's automatic checkpoint waited for 1,000 pages of WAL, and then ran in the commit
// that filled it, on the event loop), and closing the store still leaves one file that
// holds everything.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
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
});
