// The fast parser of `loom pull` (the command starts without commander) and commander must
// agree: same repo and flags from the same argv, and the fast one steps aside for anything
// commander has to answer (help, bad values, a missing or extra repo).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommanderError } from 'commander';
import { pullCommand } from '../../src/cli/pull-command.js';
import { parsePullArgv } from '../../src/cli/pull-flags.js';

async function parseWithCommander(args: string[]): Promise<{ repo: string; flags: unknown }> {
  const command = pullCommand()
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  let parsed: { repo: string; flags: unknown } | undefined;
  command.action((repo: string, flags: unknown) => {
    parsed = { repo, flags };
  });
  await command.parseAsync(args, { from: 'user' });
  assert.ok(parsed);
  return parsed;
}

describe('loom pull argument parsing', () => {
  const valid: string[][] = [
    ['org/repo'],
    ['hf://org/repo@v1', '--json', '-q', '--no-fsync'],
    ['org/repo', '--revision', 'main', '--include', '*.json', '--include', 'tokenizer/', '--exclude', '*.bin'],
    ['--hf-cache', '/h', '--cache-dir', '/c', '-o', 'out', 'org/repo', '--token', 't', '--repo-type', 'dataset'],
    ['org/repo', '-w', '8', '--parallel-files', '3', '--ca-cert', 'a.pem', '--ca-cert', 'b.pem'],
    ['org/repo', '--stall-timeout', '10s', '--retries', '3', '--retry-base-delay', '250ms', '--max-retry-after', '1m'],
    ['org/repo', '--progress', 'lines', '-w16'],
    ['s3://bucket/prefix/', '--out=dir'],
    ['--', 'org/repo'],
  ];
  for (const args of valid) {
    it(`agrees with commander on [${args.join(' ')}]`, async () => {
      const fast = parsePullArgv(args);
      assert.ok(fast, 'the fast parser takes it');
      assert.deepEqual(fast, await parseWithCommander(args));
    });
  }

  const forCommander: string[][] = [
    ['--help'],
    [],
    ['org/repo', 'org/other'],
    ['org/repo', '-w', '0'],
    ['org/repo', '--parallel-files', 'many'],
    ['org/repo', '--repo-type', 'bucket'],
    ['org/repo', '--bogus'],
    ['org/repo', '--include'],
    ['org/repo', '--json=yes'],
    ['org/repo', '--progress', 'fancy'],
  ];
  for (const args of forCommander) {
    it(`leaves [${args.join(' ')}] to commander, which refuses it or prints help`, async () => {
      assert.equal(parsePullArgv(args), undefined);
      await assert.rejects(parseWithCommander(args), CommanderError);
    });
  }
});
