// Where the cache lives: --cache-dir, else LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else ~/.cache/loom.
import assert from 'node:assert/strict';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { resolveCacheRoot } from '../../src/cache/cache-root.js';
import { UsageError } from '../../src/core/errors.js';

describe('resolveCacheRoot', () => {
  const env = { LOOM_CACHE_DIR: '/env/loom', XDG_CACHE_HOME: '/xdg' };

  it('takes the flag first, then LOOM_CACHE_DIR, then XDG_CACHE_HOME, then the home directory', () => {
    assert.equal(resolveCacheRoot('rel/cache', env), resolve('rel/cache'));
    assert.equal(resolveCacheRoot(undefined, env), '/env/loom');
    assert.equal(resolveCacheRoot(undefined, { XDG_CACHE_HOME: '/xdg' }), '/xdg/loom');
    assert.equal(resolveCacheRoot(undefined, {}), join(homedir(), '.cache', 'loom'));
  });

  it('refuses an empty flag or LOOM_CACHE_DIR, naming it, rather than falling back to the default', () => {
    assert.throws(
      () => resolveCacheRoot('', env),
      (err) => err instanceof UsageError && /--cache-dir is empty/.test(err.message),
    );
    assert.throws(
      () => resolveCacheRoot(undefined, { LOOM_CACHE_DIR: '', XDG_CACHE_HOME: '/xdg' }),
      (err) => err instanceof UsageError && /LOOM_CACHE_DIR is empty/.test(err.message),
    );
  });
});
