// An index that does not open says why, and what to do: a damaged file (which no later
// fetch mends: each one bypasses the cache) or another process keeping it locked, not
// "check that the cache directory is writable" for both.
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { CacheIndex } from '../../src/cache/cache-index.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { CacheError } from '../../src/core/errors.js';
import { runLoom, tempDir } from '../helpers/fixtures.js';

describe('a cache index that does not open', () => {
  it('damaged: says so and how to mend it, and the way it gives works', async () => {
    const root = join(tempDir(), 'cache');
    mkdirSync(root, { recursive: true });
    const { index } = cacheLayout(root);
    writeFileSync(index, 'not a database, from a disk that lost it\n'.repeat(200));
    const ls = await runLoom(['cache', 'ls', '--cache-dir', root]);
    assert.equal(ls.code, 6, ls.stderr);
    assert.match(
      ls.stderr,
      /file is not a database; the index is damaged: remove .*\/cache\/index\.db \(the blobs stay/,
    );
    rmSync(index);
    const gc = await runLoom(['cache', 'gc', '--cache-dir', root]);
    assert.equal(gc.code, 0, gc.stderr);
    const again = await runLoom(['cache', 'ls', '--cache-dir', root]);
    assert.equal(again.code, 0, again.stderr);
  });

  it('kept locked by another process: says so once the wait is over', () => {
    const root = join(tempDir(), 'cache');
    mkdirSync(root, { recursive: true });
    const layout = cacheLayout(root);
    // Another connection in the middle of a write, never finished (a process stopped mid-write).
    const other = new Database(layout.index);
    other.exec('CREATE TABLE early (a)');
    other.exec('BEGIN EXCLUSIVE');
    try {
      assert.throws(
        () => new CacheIndex(layout),
        (err: unknown) =>
          err instanceof CacheError &&
          /database is locked/.test(err.message) &&
          /another process kept the index locked .*: fuser .*index\.db names it/.test(err.hint ?? ''),
      );
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
  });
});
