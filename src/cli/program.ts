// The whole `loom` command line in commander: every subcommand, with help and usage errors.
import { Command, CommanderError } from 'commander';
import { EXIT, UsageError } from '../core/errors.js';
import { cacheCommand } from './cache-command.js';
import { controlPlaneCommand } from './control-plane-command.js';
import { fetchCommand } from './fetch-command.js';
import { agentCommand } from './agent-command.js';
import { printJson } from './output.js';
import { pullCommand } from './pull-command.js';

export function buildProgram(): Command {
  const program = new Command('loom')
    .description('Get multi-gigabyte model weights onto a node fast.')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .addHelpText(
      'after',
      "\nWithout a subcommand, fetch flags mean `loom fetch` (the original tool's usage):\n  loom --url URL --out model.gguf --workers 16 [--serve]\n",
    );
  program.addCommand(fetchCommand());
  program.addCommand(cacheCommand());
  program.addCommand(controlPlaneCommand());
  program.addCommand(agentCommand());
  program.addCommand(pullCommand());
  const output = {
    outputError: (text: string, write: (s: string) => void) => write(`loom: ${text.replace(/^error: /, 'error: ')}`),
  };
  program.configureOutput(output);
  const configure = (command: Command, path: string): void => {
    command.exitOverride().configureOutput(output).showHelpAfterError(`(run loom ${path} --help for usage)`);
    for (const sub of command.commands) configure(sub, `${path} ${sub.name()}`);
  };
  for (const sub of program.commands) configure(sub, sub.name());
  return program;
}

/**
 * Whether --json is among the flags (before a `--`). Commander stops at the first bad flag, so
 * its parsed options cannot say whether a later --json was meant; the words themselves can.
 */
export function jsonRequested(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end === -1 ? args : args.slice(0, end)).includes('--json');
}

export async function runProgram(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; every parse error is a usage error (exit 2). Commander has
      // already said so on stderr; with --json, stdout gets the document every other failure
      // prints, so a script reading stdout sees why the command did not run.
      if (err.exitCode === 0) return EXIT.ok;
      if (jsonRequested(argv.slice(2)))
        printJson({ ok: false, error: new UsageError(err.message.replace(/^error: /, '')).toJSON() });
      return EXIT.usage;
    }
    throw err;
  }
}
