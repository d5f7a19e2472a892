// A cache test's origins and caches: origins serving one file, all closed once the file's
// tests are done, and a fresh, empty cache directory for each test that asks.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after } from 'node:test';
import { OriginServer, type Fault, type OriginOptions } from '../support/origin-server.js';

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

export interface OriginGate {
  /** An origin's fault hook: every request is held until `open()`. */
  fault: () => Fault;
  open(): void;
}

/**
 * Holds an origin's answers until the test opens it. A downloader takes the source lock before
 * its first request, so it cannot finish before processes started after it have said they wait,
 * however long a loaded machine takes to start them (a rate cap alone only makes that likely).
 */
export function originGate(): OriginGate {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  // Never left shut: a test that fails before opening it must not hold its downloader forever.
  after(() => open());
  return { fault: () => ({ kind: 'hold', until: opened }), open: () => open() };
}
