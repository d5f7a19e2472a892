// The fast parser of `loom fetch` and commander must agree: same flags from the same argv,
// and the fast one steps aside for anything commander has to answer (help, bad values).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommanderError } from 'commander';
import { fetchCommand } from '../../src/cli/fetch-command.js';
import { parseFetchArgv } from '../../src/cli/fetch-argv.js';

async function parseWithCommander(args: string[]): Promise<{ url: string | undefined; flags: unknown }> {
  const command = fetchCommand()
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  let parsed: { url: string | undefined; flags: unknown } | undefined;
  command.action((url: string | undefined, flags: unknown) => {
    parsed = { url, flags };
  });
  await command.parseAsync(args, { from: 'user' });
  assert.ok(parsed);
  return parsed;
}

const SHA = 'ab'.repeat(32);

describe('loom fetch argument parsing', () => {
  const valid: string[][] = [
    ['http://h/a.bin'],
    ['http://h/a.bin', '-o', 'out.bin', '--json', '-q', '--offline'],
    ['--url', 'http://h/a', '--out=o', '-w', '8', '--chunk-size', '4MiB', '--max-request-size', '64M'],
    [
      'http://h/a',
      '--stall-timeout',
      '10s',
      '--retries',
      '3',
      '--retry-base-delay',
      '250ms',
      '--max-retry-after',
      '1m',
    ],
    ['-H', 'Authorization: Bearer x', '-H', 'X-A: b', '--ca-cert', 'a.pem', '--ca-cert', 'b.pem', 'http://h/a'],
    [
      'http://h/a',
      '--no-fsync',
      '--no-cache',
      '--cache-dir',
      '/c',
      '--sha256',
      SHA,
      '--serve',
      '--listen',
      '0.0.0.0:1',
    ],
    ['http://h/a', '-w8', '-w', '9'],
    ['http://h/a', '--progress', 'lines', '--stall-timeout', '5'],
    ['-qo', 'x', '--', 'http://h/a'],
    [],
  ];
  for (const args of valid) {
    it(`agrees with commander on [${args.join(' ')}]`, async () => {
      const fast = parseFetchArgv(args);
      assert.ok(fast, 'the fast parser takes it');
      assert.deepEqual(fast, await parseWithCommander(args));
    });
  }

  const forCommander: string[][] = [
    ['--help'],
    ['http://h/a', '-w', '0'],
    ['http://h/a', '--chunk-size', 'lots'],
    ['http://h/a', '--bogus'],
    ['http://h/a', 'http://h/b'],
    ['http://h/a', '-o'],
    ['http://h/a', '--json=yes'],
    ['http://h/a', '--progress', 'fancy'],
    ['http://h/a', '--chunk-size', '1K'],
  ];
  for (const args of forCommander) {
    it(`leaves [${args.join(' ')}] to commander, which refuses it or prints help`, async () => {
      assert.equal(parseFetchArgv(args), undefined);
      await assert.rejects(parseWithCommander(args), CommanderError);
    });
  }
});
