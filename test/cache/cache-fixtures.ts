// A cache test's origins and caches: origins serving one file, all closed once the file's
// tests are done, and a fresh, empty cache directory for each test that asks.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';

export interface CacheTestBed {
  /** A new origin serving `bytes` at `path` (/model.bin by default). */
  origin(options?: OriginOptions, path?: string): Promise<OriginServer>;
  /** A new empty cache directory under the test's directory. */
  freshCache(): string;
}

/** Origins with `defaults` (overridden by each call's options) and caches under `dir`. */
export function cacheTestBed(bytes: Buffer, dir: string, defaults: OriginOptions = {}): CacheTestBed {
  const servers: OriginServer[] = [];
  after(() => Promise.all(servers.map((s) => s.close())));
  let counter = 0;
  return {
    async origin(options: OriginOptions = {}, path = '/model.bin'): Promise<OriginServer> {
      const server = await new OriginServer({ ...defaults, ...options }).listen();
      server.setFile(path, bytes);
      servers.push(server);
      return server;
    },
    freshCache(): string {
      const cacheDir = join(dir, `cache-${++counter}`);
      mkdirSync(cacheDir);
      return cacheDir;
    },
  };
}
