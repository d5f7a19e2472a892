// Picks the store from --store: `sqlite:PATH`, `redis://HOST:PORT/DB` (or rediss://),
// `redis+cluster://HOST:PORT[,HOST:PORT…]` (or rediss+cluster://) for a Redis Cluster, or by
// default a SQLite file under the cache root.
import { join } from 'node:path';
import { UsageError } from '../core/errors.js';
import type { RegistryStore } from './model.js';

export interface StoreSpec {
  /** `sqlite:PATH`, `redis://…` or `redis+cluster://…`; default sqlite under `defaultDir`. */
  store?: string;
  defaultDir: string;
  /** Key prefix for Redis. Default `loom`. */
  redisPrefix?: string;
  /** How long a Redis store reuses a node record for locate (RedisStoreOptions.nodeCacheMs). */
  redisNodeCacheMs?: number;
}

export async function openStore(spec: StoreSpec): Promise<RegistryStore> {
  const value = spec.store ?? `sqlite:${join(spec.defaultDir, 'control-plane.db')}`;
  if (value.startsWith('sqlite:')) {
    const path = value.slice('sqlite:'.length);
    if (!path) throw new UsageError('--store sqlite: needs a path, e.g. sqlite:/var/lib/loom/cp.db');
    const { existsSync, mkdirSync } = await import('node:fs');
    const { dirname } = await import('node:path');
    if (path !== ':memory:') {
      // The default store's folder (under the cache root) is Loom's to make. A --store path's
      // is not: `sqlite:/nonexistent/x.db`, a typo, run as root, made /nonexistent/ silently.
      if (spec.store !== undefined && !existsSync(dirname(path)))
        throw new UsageError(`--store ${value}: the folder ${dirname(path)} does not exist`, {
          hint: 'create it first, or give a path in a folder that exists',
        });
      mkdirSync(dirname(path), { recursive: true });
    }
    const { SqliteStore } = await import('./sqlite-store.js');
    return new SqliteStore(path);
  }
  if (/^rediss?(\+cluster)?:\/\//.test(value)) {
    const { RedisStore } = await import('./redis-store.js');
    return new RedisStore({ url: value, prefix: spec.redisPrefix, nodeCacheMs: spec.redisNodeCacheMs });
  }
  throw new UsageError(`unknown store "${value}"`, {
    hint: 'use sqlite:PATH, redis://HOST:PORT/DB or redis+cluster://HOST:PORT[,HOST:PORT…]',
  });
}
