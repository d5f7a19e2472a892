// `loom fetch` in commander: its help and its usage errors. The fetch itself is runFetch.
import { Command, InvalidArgumentError, Option } from 'commander';
import { UsageError } from '../core/errors.js';
import { FETCH_FLAGS, type FetchFlags, type FlagSpec } from './fetch-flags.js';
import { runFetch } from './run-fetch.js';

export function commanderOption(spec: FlagSpec): Option {
  const option = new Option(spec.flags, spec.description);
  const parse = spec.parse;
  const checked = parse
    ? (value: string): unknown => {
        try {
          return parse(value);
        } catch (err) {
          throw new InvalidArgumentError(err instanceof UsageError ? err.message : String(err));
        }
      }
    : (value: string): unknown => value;
  if (spec.repeatable)
    option.argParser((value: string, previous: unknown[]) => [...previous, checked(value)]).default([], 'none');
  else if (parse) option.argParser(checked);
  if (spec.defaultValue !== undefined) option.default(spec.defaultValue);
  return option;
}

function addFetchOptions(command: Command): Command {
  for (const spec of FETCH_FLAGS) command.addOption(commanderOption(spec));
  return command;
}

export function fetchCommand(): Command {
  const command = new Command('fetch')
    .description('download one URL to a file with parallel ranged requests')
    .argument('[url]', 'http(s)://, hf://org/repo[@rev]/path or s3://bucket/key URL to fetch');
  addFetchOptions(command);
  command.action(async (urlArg: string | undefined, flags: FetchFlags) => {
    process.exitCode = await runFetch(urlArg, flags);
  });
  return command;
}
