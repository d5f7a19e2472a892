// `loom control-plane`: runs the registry service until SIGINT or SIGTERM.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { EXIT, UsageError } from '../core/errors.js';
import { parseDuration } from '../core/units.js';
import { resolveCacheRoot } from '../cache/cache-root.js';
import { checkHeaderText } from '../core/validate.js';
import { listenError } from './listen-error.js';
import { reportError } from './output.js';
import { DEFAULTS, shownDefault } from '../core/defaults.js';

const shown = (name: keyof typeof DEFAULTS.controlPlane): string => shownDefault(name, DEFAULTS.controlPlane[name]);

interface ControlPlaneFlags {
  listen: string;
  store?: string;
  tokenFile?: string;
  openReads?: boolean;
  nodeTtl?: string;
  clusterSecret?: string;
  legacyTtl?: string;
  leaseTtl?: string;
  partialTtl?: string;
  redisPrefix?: string;
  redisNodeCache?: string;
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
  return checkHeaderText(token, `the token in ${file}`);
}

export function controlPlaneCommand(): Command {
  return new Command('control-plane')
    .description('run the registry of which node holds which blob')
    .option('--listen <host:port>', 'address to listen on', DEFAULTS.controlPlane.listen)
    .option(
      '--store <spec>',
      'sqlite:PATH, redis://HOST:PORT/DB or redis+cluster://HOST:PORT[,HOST:PORT…] (default: SQLite under the cache root)',
    )
    .option(
      '--token-file <file>',
      'admin token: required for every write, and for reads too unless --open-reads (Authorization: Bearer <token>)',
    )
    .option('--open-reads', 'with a token or cluster secret: let reads (locate, manifests, nodes) through without one')
    .option(
      '--cluster-secret <secret>',
      'per-node tokens hex(HMAC-SHA256(secret, "loom-node:" + id)): a node may write only as itself (env LOOM_CLUSTER_SECRET)',
    )
    .option('--node-ttl <duration>', `how long a heartbeat keeps a node live (default: ${shown('nodeTtlMs')})`)
    .option(
      '--partial-ttl <duration>',
      `a partial replica not updated for this long is not located (default: ${shown('partialTtlMs')})`,
    )
    .option(
      '--lease-ttl <duration>',
      `how long an origin-fetch lease lasts unless renewed (default: ${shown('leaseTtlMs')})`,
    )
    .option(
      '--legacy-ttl <duration>',
      'expire /register registrations after this long unless repeated (default: never, as the original tool)',
    )
    .option('--redis-prefix <prefix>', `prefix of every Redis key (default: ${DEFAULTS.controlPlane.redisPrefix})`)
    .option(
      '--redis-node-cache <duration>',
      `with Redis: how long a node's record is reused for locate, the age of its load in an answer at most; 0 = read it every time (default: ${shown('redisNodeCacheMs')})`,
    )
    .option('--cache-dir <dir>', 'cache root, where the default SQLite store lives')
    .option('--log', 'log every request (JSON, pino)')
    .action(async (flags: ControlPlaneFlags) => {
      try {
        const { host, port } = parseListen(flags.listen);
        const token = flags.tokenFile ? readToken(flags.tokenFile) : undefined;
        const clusterSecret = flags.clusterSecret ?? (process.env.LOOM_CLUSTER_SECRET || undefined);
        if (clusterSecret !== undefined && clusterSecret.length < 16)
          throw new UsageError('the cluster secret is shorter than 16 characters', {
            hint: 'use a long random secret, e.g. openssl rand -hex 32',
          });
        const duration = (value: string | undefined, flag: string): number | undefined => {
          if (value === undefined) return undefined;
          const ms = parseDuration(value, flag);
          // A lifetime of 0 would expire everything as it is written; one under a second
          // expires a node before its next heartbeat (sent at a third of --node-ttl) arrives.
          if (ms < 1) throw new UsageError(`${flag} "${value}" must be longer than 0`);
          if (ms < MIN_LIFETIME_MS)
            throw new UsageError(`${flag} "${value}" is too short to work`, { hint: 'give 1s or more' });
          return ms;
        };
        // Every flag is read before the store opens: a store left open (its checkpoint
        // thread, a Redis connection) would keep a process that failed on a flag alive.
        const lifetimes = {
          nodeTtlMs: duration(flags.nodeTtl, '--node-ttl'),
          partialTtlMs: duration(flags.partialTtl, '--partial-ttl'),
          leaseTtlMs: duration(flags.leaseTtl, '--lease-ttl'),
          legacyTtlMs: duration(flags.legacyTtl, '--legacy-ttl'),
        };
        // 0 is allowed: it turns the copy off (every locate reads its nodes' records).
        const redisNodeCacheMs =
          flags.redisNodeCache === undefined ? undefined : parseDuration(flags.redisNodeCache, '--redis-node-cache');
        const [{ openStore }, { buildControlPlane, checkpointMessage }] = await Promise.all([
          import('../control-plane/open-store.js'),
          import('../control-plane/server.js'),
        ]);
        const store = await openStore({
          store: flags.store,
          defaultDir: resolveCacheRoot(flags.cacheDir),
          redisPrefix: flags.redisPrefix,
          redisNodeCacheMs,
        });
        // With --log the server logs it; without, nothing else would say it (but /metrics):
        // the WAL grows on a full disk until a checkpoint works again.
        if (!flags.log)
          store.onCheckpointChange?.((error) =>
            process.stderr.write(`loom: ${error === undefined ? '' : 'warning: '}${checkpointMessage(error)}\n`),
          );
        let app: Awaited<ReturnType<typeof buildControlPlane>> | undefined;
        let address: string;
        try {
          app = await buildControlPlane({
            store,
            token,
            clusterSecret,
            openReads: flags.openReads,
            ...lifetimes,
            logger: flags.log ?? false,
          });
          address = await app.listen({ host, port }).catch((err: unknown) => {
            throw listenError(err, `${host}:${port}`, 'choose another address with --listen HOST:PORT');
          });
        } catch (err) {
          // A busy port, say: nothing of the store may outlive the error.
          await app?.close();
          await store.close();
          throw err;
        }
        process.stderr.write(
          `loom: control plane on ${address} (store: ${store.kind}, ${accessLine(flags, token, clusterSecret)})\n`,
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

/** The shortest lifetime a flag may give: heartbeats and renewals cross a network in it. */
const MIN_LIFETIME_MS = 1_000;

/** What the banner says the credentials protect, exactly. */
function accessLine(flags: ControlPlaneFlags, token: string | undefined, clusterSecret: string | undefined): string {
  if (!token && !clusterSecret) return 'open: no token, anyone may read and write';
  const who = [token && 'the admin token', clusterSecret && "a node's own token"].filter(Boolean).join(' or ');
  return `${who} required for writes${flags.openReads ? '; reads open' : ' and reads'}`;
}
