// bin/loom.cjs compiles the bundle from the V8 code cache the build writes beside it: the
// cache belongs to this very bundle (the build id line they share) and V8 accepts it; a
// cache of another build, or one V8 refuses, leaves the command working as before.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { before, describe, it } from 'node:test';
import { REPO_ROOT, tempDir } from '../helpers/fixtures.js';

const run = promisify(execFile);
const BUNDLE = join(REPO_ROOT, 'dist', 'bin', 'loom.cjs');

/** bin/ and dist/bin/ copied to a directory of their own, to change the cache there. */
function copyOfTheCommand(cache: Buffer | undefined): string {
  const root = tempDir('loom-code-cache-');
  mkdirSync(join(root, 'bin'));
  mkdirSync(join(root, 'dist', 'bin'), { recursive: true });
  copyFileSync(join(REPO_ROOT, 'bin', 'loom.cjs'), join(root, 'bin', 'loom.cjs'));
  copyFileSync(BUNDLE, join(root, 'dist', 'bin', 'loom.cjs'));
  if (cache) writeFileSync(join(root, 'dist', 'bin', 'loom.cjs.v8cache'), cache);
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
  return join(root, 'bin', 'loom.cjs');
}

describe('the V8 code cache of the bundle', () => {
  before(async () => {
    await run(process.execPath, [join(REPO_ROOT, 'scripts', 'build-if-stale.mjs')], { cwd: REPO_ROOT });
  });

  it('is written by the build for this bundle, and V8 accepts it', async () => {
    const source = readFileSync(BUNDLE, 'utf8');
    const cache = readFileSync(`${BUNDLE}.v8cache`);
    const idLine = /\n(\/\/ loom-build [0-9a-f]{16})\n$/.exec(source)?.[1];
    assert.ok(idLine, 'the bundle ends with its build id');
    assert.equal(cache.toString('latin1', 0, cache.indexOf(10)), idLine);
    // Checked in a plain node, as bin/loom.cjs runs (the test runner's flags are not the CLI's).
    const check = await run(process.execPath, [
      '-e',
      `const fs = require('node:fs'), vm = require('node:vm'), Module = require('node:module');
       const cache = fs.readFileSync(process.argv[1] + '.v8cache');
       const script = new vm.Script(Module.wrap(fs.readFileSync(process.argv[1], 'utf8')), {
         filename: process.argv[1], cachedData: cache.subarray(cache.indexOf(10) + 1) });
       process.stdout.write(String(script.cachedDataRejected));`,
      BUNDLE,
    ]);
    assert.equal(check.stdout, 'false', 'V8 takes the cache');
    assert.doesNotMatch(source, /[^\w.$]import\(/, 'no import() left: a cached compile has no callback for it');
  });

  const idLine = (): string => readFileSync(BUNDLE, 'utf8').trimEnd().split('\n').pop()!;
  const cases: Array<[string, () => Buffer | undefined]> = [
    ['without a cache', () => undefined],
    [
      'with the cache of another build',
      () =>
        Buffer.concat([
          Buffer.from('// loom-build 0000000000000000\n'),
          readFileSync(`${BUNDLE}.v8cache`).subarray(31),
        ]),
    ],
    ['with a cache V8 refuses', () => Buffer.concat([Buffer.from(`${idLine()}\n`), Buffer.alloc(4096, 7)])],
  ];
  for (const [name, cache] of cases) {
    it(`runs ${name}`, async () => {
      const loom = copyOfTheCommand(cache());
      const version = await run(process.execPath, [loom, '--version']);
      assert.equal(version.stdout, '0.1.0\n');
      const refused = await run(process.execPath, [loom, 'fetch', 'ftp://host/file']).catch(
        (err: { code: number; stderr: string }) => err,
      );
      assert.equal((refused as { code: number }).code, 2);
      assert.match((refused as { stderr: string }).stderr, /unsupported URL scheme/);
    });
  }
});
