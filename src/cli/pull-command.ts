// `loom pull` in commander: its help and its usage errors. The pull itself is runPull.
import { Command } from 'commander';
import { commanderOption } from './fetch-command.js';
import { PULL_FLAGS, type PullFlags } from './pull-flags.js';
import { runPull } from './run-pull.js';

export function pullCommand(): Command {
  const command = new Command('pull')
    .description('download a Hugging Face repo at one commit into the HF cache (or --out DIR), verified')
    .argument(
      '<repo>',
      'org/repo[@revision], hf://org/repo[@revision], hf://datasets/org/name or s3://bucket/prefix/ (with --out)',
    );
  for (const spec of PULL_FLAGS) command.addOption(commanderOption(spec));
  command.action(async (repo: string, flags: PullFlags) => {
    process.exitCode = await runPull(repo, flags);
  });
  return command;
}
