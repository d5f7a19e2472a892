// `loom control-plane`: runs the registry service until SIGINT or SIGTERM.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { EXIT, UsageError } from '../core/errors.js';
import { parseDuration } from '../core/units.js';
import { resolveCacheRoot } from '../cache/cache-root.js';
import { reportError } from './output.js';

interface ControlPlaneFlags {
  listen: string;
  store?: string;
  tokenFile?: string;
  openReads?: boolean;
  nodeTtl?: string;
  redisPrefix?: string;
  cacheDir?: string;
  log?: boolean;
}

export function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535)
    throw new UsageError(`--listen "${value}" is not HOST:PORT`, { hint: 'e.g. 127.0.0.1:7070 or 0.0.0.0:7070' });
  return { host: match[1] ?? match[2]!, port };
}

export function readToken(file: string): string {
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`cannot read --token-file ${file}: ${(err as Error).message}`);
  }
  if (token.length < 16)
    throw new UsageError(`the token in ${file} is shorter than 16 characters`, {
      hint: 'use a long random token, e.g. openssl rand -hex 32',
    });
  return token;
}

export function controlPlaneCommand(): Command {
  return new Command('control-plane')
    .description('run the registry of which node holds which blob')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:7070')
    .option('--store <spec>', 'sqlite:PATH or redis://HOST:PORT/DB (default: SQLite under the cache root)')
    .option('--token-file <file>', 'require Authorization: Bearer <token> for writes')
    .option('--open-reads', 'with a token: let reads through without it')
    .option('--node-ttl <duration>', 'how long a heartbeat keeps a node live (default 30s)')
    .option('--redis-prefix <prefix>', 'prefix of every Redis key (default loom)')
    .option('--cache-dir <dir>', 'cache root, where the default SQLite store lives')
    .option('--log', 'log every request (JSON, pino)')
    .action(async (flags: ControlPlaneFlags) => {
      try {
        const { host, port } = parseListen(flags.listen);
        const token = flags.tokenFile ? readToken(flags.tokenFile) : undefined;
        const [{ openStore }, { buildControlPlane }] = await Promise.all([
          import('../control-plane/open-store.js'),
          import('../control-plane/server.js'),
        ]);
        const store = await openStore({
          store: flags.store,
          defaultDir: resolveCacheRoot(flags.cacheDir),
          redisPrefix: flags.redisPrefix,
        });
        const app = await buildControlPlane({
          store,
          token,
          openReads: flags.openReads,
          nodeTtlMs: flags.nodeTtl ? parseDuration(flags.nodeTtl, '--node-ttl') : undefined,
          logger: flags.log ?? false,
        });
        const address = await app.listen({ host, port });
        process.stderr.write(
          `loom: control plane on ${address} (store: ${store.kind}${token ? ', token required for writes' : ''})\n`,
        );
        await new Promise<void>((resolve) => {
          const stop = (): void => resolve();
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        });
        await app.close();
        await store.close();
        process.exitCode = EXIT.ok;
      } catch (err) {
        process.exitCode = reportError(err, {});
      }
    });
}
