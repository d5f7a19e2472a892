// `loom agent`: serves this node's cache to peers and keeps the control plane told what it
// holds, until SIGINT or SIGTERM, when it deregisters and exits 0.
import { Command } from 'commander';
import { EXIT, UsageError } from '../core/errors.js';
import { resolveCacheRoot } from '../cache/cache-root.js';
import { checkHeaderText } from '../core/validate.js';
import { parseListen, readToken } from './control-plane-command.js';
import { listenError } from './listen-error.js';
import { reportError } from './output.js';
import { DEFAULTS } from '../core/defaults.js';

interface AgentFlags {
  controlPlane?: string;
  listen: string;
  advertise?: string;
  nodeId?: string;
  zone?: string;
  tokenFile?: string;
  peerTokenFile?: string;
  maxUploads?: string;
  cacheDir?: string;
}

function parseMaxUploads(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 10_000)
    throw new UsageError(`--max-uploads "${value}" must be a whole number from 1 to 10000`);
  return n;
}

/** A token from its file, else from the environment variable; too short is a usage error. */
export function tokenFrom(file: string | undefined, variable: string, env: NodeJS.ProcessEnv): string | undefined {
  if (file) return readToken(file);
  const token = env[variable]?.trim();
  if (!token) return undefined;
  if (token.length < 16) throw new UsageError(`${variable} is shorter than 16 characters`);
  return checkHeaderText(token, variable);
}

export function agentCommand(): Command {
  return new Command('agent')
    .description("serve this node's cache to peers and announce it to the control plane")
    .option('--control-plane <url>', 'control plane URL (env LOOM_CONTROL_PLANE)')
    .option('--listen <host:port>', 'address to serve peers on', DEFAULTS.agent.listen)
    .option('--advertise <url>', 'URL peers reach this agent at (default: the listen address, or the host name)')
    .option('--node-id <id>', 'this node in the control plane (env LOOM_NODE_ID; default: the host name)')
    .option('--zone <zone>', 'zone of this node; peers in the same zone are preferred')
    .option('--token-file <file>', 'bearer token for the control plane, also required from peers (env LOOM_TOKEN)')
    .option(
      '--peer-token-file <file>',
      'bearer token peers must present instead of the --token-file one (env LOOM_PEER_TOKEN)',
    )
    .option('--max-uploads <n>', `uploads at once; above it peers get 503 (default: ${DEFAULTS.agent.maxUploads})`)
    .option('--cache-dir <dir>', 'cache root (env LOOM_CACHE_DIR)')
    .action(async (flags: AgentFlags) => {
      try {
        const env = process.env;
        const controlPlane = flags.controlPlane ?? env.LOOM_CONTROL_PLANE;
        if (!controlPlane)
          throw new UsageError('no control plane given', {
            hint: 'pass --control-plane URL or set LOOM_CONTROL_PLANE',
          });
        const listen = parseListen(flags.listen);
        const maxUploads = parseMaxUploads(flags.maxUploads);
        const token = tokenFrom(flags.tokenFile, 'LOOM_TOKEN', env);
        const peerToken = tokenFrom(flags.peerTokenFile, 'LOOM_PEER_TOKEN', env);
        const cacheRoot = resolveCacheRoot(flags.cacheDir, env);
        const { Agent, defaultNodeId } = await import('../peer/agent.js');
        const nodeId = flags.nodeId ?? env.LOOM_NODE_ID ?? defaultNodeId();
        const agent = await Agent.start({
          controlPlane,
          controlPlaneFrom: flags.controlPlane === undefined ? 'LOOM_CONTROL_PLANE' : '--control-plane',
          cacheRoot,
          nodeId,
          listen,
          advertise: flags.advertise,
          zone: flags.zone,
          token,
          peerToken,
          maxUploads,
        }).catch((err: unknown) => {
          throw listenError(err, `${listen.host}:${listen.port}`, 'choose another address with --listen HOST:PORT');
        });
        process.stderr.write(
          `loom: agent ${nodeId} serving ${cacheRoot} on ${listen.host}:${agent.boundPort} as ${agent.advertisedUrl}` +
            ` (control plane ${controlPlane}${peerToken || token ? ', peers need a token' : ''})\n`,
        );
        const signal = await new Promise<NodeJS.Signals>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        process.stderr.write(`loom: agent: ${signal}: deregistering and stopping\n`);
        await agent.stop();
        process.exitCode = EXIT.ok;
      } catch (err) {
        process.exitCode = reportError(err, {});
      }
    });
}
