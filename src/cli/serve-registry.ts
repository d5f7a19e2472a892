// The original tool's --serve: the registry runs inside the downloading process (in memory,
// gone when it exits), on localhost:3000 unless told otherwise. It binds its port before the
// download, so a busy port is reported before any byte is fetched, but answers 503 until the
// download is done and this node is registered as holding the file: as in the original
// tool, the registry serves after the download.
import { basename } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { SqliteStore } from '../control-plane/sqlite-store.js';
import { SERVE_LISTEN_DEFAULT } from './fetch-flags.js';
import { listenError } from './listen-error.js';

export interface ServedRegistry {
  /** `http://127.0.0.1:3000`: where it listens. */
  address: string;
  /** What this node registers itself as: where other nodes reach it. */
  advertised: string;
  /** Said once when `advertised` is a guess (a wildcard listen without --advertise). */
  warning: string | undefined;
  /** Registers this node as holding `out` (model name = the file's name). */
  register(out: string): Promise<void>;
  close(): Promise<void>;
}

/** --listen, else $LOOM_SERVE_LISTEN, else the original tool's 127.0.0.1:3000. */
export function serveListen(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? (env.LOOM_SERVE_LISTEN || SERVE_LISTEN_DEFAULT);
}

export interface RegistryOptions {
  /** --listen; else $LOOM_SERVE_LISTEN, else 127.0.0.1:3000. */
  listen?: string;
  /** --advertise: the URL this node registers itself as. */
  advertise?: string;
  /** --legacy-ttl: /register registrations expire after this long (default: never). */
  legacyTtlMs?: number;
}

export async function startRegistry(options: RegistryOptions = {}): Promise<ServedRegistry> {
  const listen = serveListen(options.listen);
  const [{ parseListen }, { SqliteStore: Store }, { buildControlPlane }, { advertiseUrl }] = await Promise.all([
    import('./control-plane-command.js'),
    import('../control-plane/sqlite-store.js'),
    import('../control-plane/server.js'),
    import('../peer/agent.js'),
  ]);
  const { host, port } = parseListen(listen);
  const store: SqliteStore = new Store(':memory:');
  let serving = false;
  let app: FastifyInstance | undefined;
  let address: string;
  try {
    app = await buildControlPlane({ store, nodeTtlMs: 365 * 24 * 3600_000, legacyTtlMs: options.legacyTtlMs });
    app.addHook('onRequest', async (_request, reply) => {
      if (serving) return;
      await reply
        .code(503)
        .header('retry-after', '1')
        .send({ ok: false, error: { message: 'the registry serves once this node has finished its download' } });
    });
    address = await app.listen({ host, port });
  } catch (err) {
    await app?.close();
    await store.close();
    throw listenError(err, listen, 'choose another address with --listen HOST:PORT (or LOOM_SERVE_LISTEN)');
  }
  const server = app;
  // Other nodes are told this address: never a loopback one standing in for a wildcard listen.
  const bound = (server.server.address() as { port: number }).port;
  // fastify names a loopback address for a wildcard listen; the banner says what was bound.
  if (host === '0.0.0.0' || host === '::') address = `http://${host === '::' ? '[::]' : host}:${bound}`;
  const guessed = options.advertise === undefined ? advertiseUrl(host, bound) : undefined;
  const advertised = options.advertise ?? guessed!.url;
  return {
    address,
    advertised,
    warning: guessed?.warning?.replace('to peers', 'to other nodes'),
    async register(out) {
      serving = true;
      const response = await server.inject({
        method: 'POST',
        url: '/register',
        payload: { node: advertised, model: basename(out) },
      });
      if (response.statusCode !== 200) throw new Error(`registering ${basename(out)} failed: ${response.body}`);
    },
    async close() {
      await server.close();
      await store.close();
    },
  };
}
