// Where the cache lives: --cache-dir, else LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else ~/.cache/loom.
import assert from 'node:assert/strict';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { resolveCacheRoot } from '../../src/cache/cache-root.js';

describe('resolveCacheRoot', () => {
  const env = { LOOM_CACHE_DIR: '/env/loom', XDG_CACHE_HOME: '/xdg' };

  it('takes the flag first, then LOOM_CACHE_DIR, then XDG_CACHE_HOME, then the home directory', () => {
    assert.equal(resolveCacheRoot('rel/cache', env), resolve('rel/cache'));
    assert.equal(resolveCacheRoot(undefined, env), '/env/loom');
    assert.equal(resolveCacheRoot(undefined, { XDG_CACHE_HOME: '/xdg' }), '/xdg/loom');
    assert.equal(resolveCacheRoot(undefined, {}), join(homedir(), '.cache', 'loom'));
  });
});
