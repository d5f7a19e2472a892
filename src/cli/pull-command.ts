// `loom pull`: a whole Hugging Face repo at one commit into the standard HF cache (or plain
// files in --out). Prints the snapshot directory on stdout (a script can use it), one line
// per file on stderr, and one JSON document with --json.
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULTS } from '../core/defaults.js';
import { EXIT, UsageError } from '../core/errors.js';
import { formatBytes as formatSize } from '../core/units.js';
import { printJson, reportError, say } from './output.js';
import { onInterrupt } from './signals.js';

interface PullFlags {
  revision?: string;
  include: string[];
  exclude: string[];
  out?: string;
  token?: string;
  repoType?: 'model' | 'dataset' | 'space';
  hfCache?: string;
  cacheDir?: string;
  workers: number;
  parallelFiles: number;
  caCert: string[];
  fsync: boolean;
  quiet?: boolean;
  json?: boolean;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function integerIn(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

export function pullCommand(): Command {
  const command = new Command('pull')
    .description('download a Hugging Face repo at one commit into the HF cache (or --out DIR), verified')
    .argument('<repo>', 'org/repo[@revision], hf://org/repo[@revision] or hf://datasets/org/name')
    .option('--revision <rev>', 'branch, tag or commit (instead of @revision; default main)')
    .option('--include <glob>', 'only paths matching (repeatable); ** crosses directories', collect, [])
    .option('--exclude <glob>', 'leave out paths matching (repeatable)', collect, [])
    .option('-o, --out <dir>', 'plain files (hard links) in DIR instead of the HF cache')
    .option('--token <token>', 'Hub token (default: HF_TOKEN, HF_TOKEN_PATH, $HF_HOME/token)')
    .addOption(new Option('--repo-type <type>', 'repo type').choices(['model', 'dataset', 'space']))
    .option('--hf-cache <dir>', 'HF cache (default: HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)')
    .option('--cache-dir <dir>', "Loom's node cache root (default: $LOOM_CACHE_DIR, ~/.cache/loom)")
    .option(
      '-w, --workers <n>',
      `requests in flight per file, 1-${DEFAULTS.maxWorkers}`,
      integerIn(1, DEFAULTS.maxWorkers),
      DEFAULTS.workers,
    )
    .option('--parallel-files <n>', 'files fetched at once, 1-64', integerIn(1, 64), 8)
    .option('--ca-cert <file>', 'also trust this PEM CA certificate (repeatable)', collect, [])
    .option('--no-fsync', 'skip the flush to disk before each rename')
    .option('-q, --quiet', 'print nothing but errors and the directory')
    .option('--json', 'print one JSON summary on stdout');
  command.action(async (repo: string, flags: PullFlags) => {
    process.exitCode = await runPull(repo, flags);
  });
  return command;
}

export async function runPull(repo: string, flags: PullFlags): Promise<number> {
  const interrupt = onInterrupt();
  try {
    if (flags.revision !== undefined && repo.includes('@')) {
      throw new UsageError('the revision is given twice (@revision and --revision)');
    }
    const { pullRepo } = await import('../hub/pull.js');
    const result = await pullRepo({
      repo,
      revision: flags.revision,
      repoType: flags.repoType,
      include: flags.include,
      exclude: flags.exclude,
      out: flags.out,
      token: flags.token,
      hubCache: flags.hfCache,
      cacheDir: flags.cacheDir,
      parallelFiles: flags.parallelFiles,
      fetch: { workers: flags.workers, caCertFiles: flags.caCert, fsync: flags.fsync, signal: interrupt.signal },
      onStatus: (message) => say(flags, `loom: ${message}`),
      onFile: (file, { done, total }) =>
        say(flags, `loom: [${done}/${total}] ${file.path} ${formatSize(file.size)} (${file.outcome})`),
    });
    if (flags.json) {
      printJson({ ok: true, ...result });
    } else {
      const fetched = result.files.filter((f) => f.outcome === 'miss').length;
      say(
        flags,
        `loom: ${result.repoType} ${result.repo}@${result.revision} (commit ${result.commit.slice(0, 12)}): ` +
          `${result.files.length} files, ${formatSize(result.bytes)} in ${result.seconds.toFixed(2)} s; ` +
          `${fetched} downloaded (${formatSize(result.transferredBytes)}), ${result.files.length - fetched} already here`,
      );
      process.stdout.write(`${result.dir}\n`);
    }
    return EXIT.ok;
  } catch (err) {
    return reportError(err, flags);
  } finally {
    interrupt.dispose();
  }
}
