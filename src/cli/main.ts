// The `loom` command line: runs one subcommand and returns its exit code. `loom fetch` with
// flags that parse cleanly starts without commander (see fetch-argv.ts); everything else,
// help and usage errors included, goes through the commander program.
import { parseFetchArgv } from './fetch-argv.js';
import { runFetch } from './run-fetch.js';

export async function main(argv: string[]): Promise<number> {
  if (argv[2] === 'fetch') {
    const parsed = parseFetchArgv(argv.slice(3));
    if (parsed) return runFetch(parsed.url, parsed.flags);
  }
  const { runProgram } = await import('./program.js');
  return runProgram(argv);
}
