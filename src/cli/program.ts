// The whole `loom` command line in commander: every subcommand, with help and usage errors.
import { Command, CommanderError } from 'commander';
import { EXIT } from '../core/errors.js';
import { cacheCommand } from './cache-command.js';
import { controlPlaneCommand } from './control-plane-command.js';
import { fetchCommand } from './fetch-command.js';
import { agentCommand } from './agent-command.js';
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

export async function runProgram(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; every parse error is a usage error (exit 2).
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    throw err;
  }
}
