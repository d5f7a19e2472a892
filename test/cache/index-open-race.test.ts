// Another process opening the node cache at the same moment (a fleet's first fetches on one
// node): the open waits for it instead of failing. SQLite's busy timeout does not cover the
// switch to WAL: while another connection writes to the new, not yet WAL, index, that switch
// fails at once with "database is locked" (seen about once in 30 starts of four processes).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { collect, tempDir, waitFor } from '../helpers/fixtures.js';

const CHILD = fileURLToPath(new URL('./index-open-child.ts', import.meta.url));

describe('the cache index opened while another process writes to it', () => {
  it('waits for the writer, then opens in WAL mode', async () => {
    const root = join(tempDir(), 'cache');
    mkdirSync(root, { recursive: true });
    // The other process, caught between creating the index and switching it to WAL.
    const other = new Database(cacheLayout(root).index);
    other.exec('CREATE TABLE early (a)');
    other.exec('BEGIN IMMEDIATE');
    let said = '';
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, root]);
    child.stdout.on('data', (chunk: Buffer) => (said += chunk.toString()));
    const done = collect(child);
    try {
      await waitFor('the child opening the index', () => said.includes('opening'), 60_000);
      // Held a while after the child began to open: without the wait it fails at once.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    } finally {
      other.exec('COMMIT');
    }
    const result = await done;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(said, 'opening\nopened\n');
    other.close();
    const after = new Database(cacheLayout(root).index, { readonly: true });
    assert.equal(after.pragma('journal_mode', { simple: true }), 'wal');
    after.close();
  });
});
