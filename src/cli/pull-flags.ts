// The flags of `loom pull`, defined once: commander's command (pull-command.ts, for help and
// usage errors) and the fast parser (fetch-argv.ts, for a pull that starts without
// commander) are both built from this table. The engine flags it shares with `loom fetch`
// are taken from that command's table, with the same parsing, help and defaults.
import { DEFAULTS } from '../core/defaults.js';
import { UsageError } from '../core/errors.js';
import { parseFlagArgv } from './fetch-argv.js';
import { FETCH_FLAGS, integerIn, type FlagSpec, type ProgressMode } from './fetch-flags.js';

export interface PullFlags {
  revision?: string;
  include: string[];
  exclude: string[];
  out?: string;
  token?: string;
  repoType?: 'model' | 'dataset' | 'space';
  hfCache?: string;
  cacheDir?: string;
  workers: number;
  parallelFiles?: number;
  caCert: string[];
  fsync: boolean;
  quiet?: boolean;
  json?: boolean;
  progress: ProgressMode;
  stallTimeout?: number;
  retries?: number;
  retryBaseDelay?: number;
  maxRetryAfter?: number;
}

const REPO_TYPES = ['model', 'dataset', 'space'] as const;

function repoTypeArg(value: string): PullFlags['repoType'] {
  const type = REPO_TYPES.find((t) => t === value);
  if (!type) throw new UsageError(`must be one of ${REPO_TYPES.join(', ')}`);
  return type;
}

/** Flags a pull shares with `loom fetch`. */
const SHARED_FETCH_FLAGS = ['--stall-timeout', '--retries', '--retry-base-delay', '--max-retry-after', '--progress'];

export const PULL_FLAGS: readonly FlagSpec[] = [
  {
    flags: '--revision <rev>',
    description: `branch, tag or commit (instead of @revision; default: ${DEFAULTS.hub.revision})`,
  },
  {
    flags: '--include <glob>',
    description: 'only paths matching (repeatable); ** crosses directories',
    repeatable: true,
  },
  { flags: '--exclude <glob>', description: 'leave out paths matching (repeatable)', repeatable: true },
  { flags: '-o, --out <dir>', description: 'plain files (hard links) in DIR instead of the HF cache' },
  { flags: '--token <token>', description: 'Hub token (default: HF_TOKEN, HF_TOKEN_PATH, $HF_HOME/token)' },
  { flags: '--repo-type <type>', description: 'repo type: model, dataset or space', parse: repoTypeArg },
  {
    flags: '--hf-cache <dir>',
    description: 'HF cache (default: HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)',
  },
  {
    flags: '--cache-dir <dir>',
    description: "Loom's node cache root (default: $LOOM_CACHE_DIR, $XDG_CACHE_HOME/loom, ~/.cache/loom)",
  },
  {
    flags: '-w, --workers <n>',
    description: `requests in flight for the whole pull (one pool all files share), 1-${DEFAULTS.maxWorkers}`,
    parse: integerIn(1, DEFAULTS.maxWorkers),
    defaultValue: DEFAULTS.workers,
  },
  {
    flags: '--parallel-files <n>',
    description: 'files in progress at once, at most, 1-256 (default: --workers)',
    parse: integerIn(1, 256),
  },
  { flags: '--ca-cert <file>', description: 'also trust this PEM CA certificate (repeatable)', repeatable: true },
  { flags: '--no-fsync', description: 'skip the flush to disk before each rename' },
  { flags: '-q, --quiet', description: 'print nothing but errors and the directory' },
  { flags: '--json', description: 'print one JSON summary on stdout' },
  ...FETCH_FLAGS.filter((spec) => SHARED_FETCH_FLAGS.some((flag) => spec.flags.startsWith(flag))),
];

/** `loom pull` argv (after `pull`) without commander, or undefined when commander should answer. */
export function parsePullArgv(args: string[]): { repo: string; flags: PullFlags } | undefined {
  const parsed = parseFlagArgv(PULL_FLAGS, args);
  if (!parsed || parsed.positionals.length !== 1) return undefined;
  return { repo: parsed.positionals[0]!, flags: parsed.flags as unknown as PullFlags };
}
