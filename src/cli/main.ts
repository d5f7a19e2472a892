// The `loom` command line: runs one subcommand and returns its exit code. `loom fetch` and
// `loom pull` with flags that parse cleanly start without commander (fetch-argv.ts,
// pull-flags.ts); everything else, help and usage errors included, goes through the
// commander program. Each command's code is loaded only when it runs: a cache hit is mostly
// process start-up, and a pull has no use for the fetch command's modules (nor the reverse).
import { startMemoryLog } from './process-memory.js';

const PROGRAM_FLAGS = new Set(['-h', '--help', '-V', '--version']);

/**
 * The original tool had no subcommands: `loom --url URL --out F --workers 16 [--serve]`.
 * A command line that starts with a fetch flag (or a URL, as curl's does) is `loom fetch`.
 * Any `scheme://` counts as a URL, so `loom ftp://…` is told its scheme is not supported
 * rather than that "ftp://…" is not a command.
 */
export function impliedFetch(args: string[]): boolean {
  const first = args[0];
  if (first === undefined) return false;
  if (first.startsWith('-')) return !PROGRAM_FLAGS.has(first);
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(first);
}

export async function main(argv: string[]): Promise<number> {
  const stopMemoryLog = startMemoryLog();
  try {
    return await run(argv);
  } finally {
    stopMemoryLog();
  }
}

async function run(argv: string[]): Promise<number> {
  const args = impliedFetch(argv.slice(2)) ? ['fetch', ...argv.slice(2)] : argv.slice(2);
  if (args[0] === 'fetch') {
    const { parseFetchArgv } = await import('./fetch-argv.js');
    const parsed = parseFetchArgv(args.slice(1));
    if (parsed) return (await import('./run-fetch.js')).runFetch(parsed.url, parsed.flags);
  }
  if (args[0] === 'pull') {
    const { parsePullArgv } = await import('./pull-flags.js');
    const parsed = parsePullArgv(args.slice(1));
    if (parsed) return (await import('./run-pull.js')).runPull(parsed.repo, parsed.flags);
  }
  const { runProgram } = await import('./program.js');
  return runProgram([...argv.slice(0, 2), ...args]);
}
