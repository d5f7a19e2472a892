// The package as npm publishes it: `npm pack` holds the built code and nothing for
// development, and its `loom` runs from the unpacked tarball. The build runs once, not
// before every test run: a second look at a fresh dist/ builds nothing.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { REPO_ROOT, tempDir } from '../helpers/fixtures.js';

const run = promisify(execFile);

describe('the published package', () => {
  it('packs bin/ and dist/ only, and its loom runs from the unpacked tarball', async () => {
    const dest = tempDir('loom-pack-');
    // dist/ as fresh as src/ (built at most once), then packed without running `prepare` again.
    await run(process.execPath, [join(REPO_ROOT, 'scripts', 'build-if-stale.mjs')], { cwd: REPO_ROOT });
    const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], {
      cwd: REPO_ROOT,
    });
    const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = info!.files.map((f) => f.path).sort();
    assert.ok(files.includes('bin/loom.cjs'));
    assert.ok(files.includes('dist/bin/loom.cjs'));
    assert.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts'));
    const unexpected = files.filter(
      (f) => !(f.startsWith('bin/') || f.startsWith('dist/') || ['package.json', 'README.md', 'LICENSE'].includes(f)),
    );
    assert.deepEqual(unexpected, [], 'nothing but the built code');
    assert.deepEqual(
      files.filter((f) => /\.test\.|(^|\/)test\/|(^|\/)bench\/|\.ts$/.test(f) && !f.endsWith('.d.ts')),
      [],
      'no tests, benchmarks or TypeScript sources',
    );

    await run('tar', ['xzf', join(dest, info!.filename), '-C', dest]);
    // What `npm install` would add beside it: the dependencies.
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(dest, 'package', 'node_modules'));
    const help = await run(process.execPath, [join(dest, 'package', 'bin', 'loom.cjs'), '--help'], { cwd: dest });
    assert.match(help.stdout, /^Usage: loom /);
    assert.match(help.stdout, /fetch \[options\] \[url\]/);
    const fetchHelp = await run(process.execPath, [join(dest, 'package', 'bin', 'loom.cjs'), 'fetch', '--help']);
    assert.match(fetchHelp.stdout, /--progress <mode>/);
  });

  it('builds only when dist/ is missing or older than src/', async () => {
    const script = join(REPO_ROOT, 'scripts', 'build-if-stale.mjs');
    await run(process.execPath, [script], { cwd: REPO_ROOT }); // builds if this run's dist/ is stale
    const before = statSync(join(REPO_ROOT, 'dist', 'bin', 'loom.cjs')).mtimeMs;
    const again = await run(process.execPath, [script], { cwd: REPO_ROOT });
    assert.equal(again.stderr, '');
    assert.equal(statSync(join(REPO_ROOT, 'dist', 'bin', 'loom.cjs')).mtimeMs, before, 'dist/ left as it was');
  });
});
