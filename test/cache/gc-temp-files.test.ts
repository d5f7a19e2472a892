// gc and the temp files of records named by their writer's pid (`*.json.<pid>.tmp` in hints/,
// copies/, manifests/): a writer in another pid namespace (another container sharing the
// cache) has a pid this process cannot see, so a pid that is not running here does not make a
// young temp file abandoned; one older than the grace period is, whatever wrote it, and
// whatever pid runs here (pid 1 always does).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PID_TEMP_GRACE_MS } from '../../src/cache/cache-admin.js';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { hintPath } from '../../src/cache/hit-hints.js';
import { isProcessAlive } from '../../src/core/processes.js';
import { gcCache, openCache, sourceKey } from '../../src/index.js';
import { collect, REPO_ROOT, tempDir, waitFor } from '../helpers/fixtures.js';

/** A pid no process here has: the writer in the new namespace gets it there. */
function deadPidHere(): number {
  for (let pid = 20_000; pid < 30_000; pid++) if (!isProcessAlive(pid)) return pid;
  throw new Error('no free pid between 20000 and 30000');
}

describe('gc and temp files named by a pid', () => {
  it('keeps the temp file of a writer in another pid namespace, which then renames it', async () => {
    const cacheDir = tempDir();
    const cache = await openCache(cacheDir);
    const hint = hintPath(cacheLayout(cacheDir), sourceKey('http://example.invalid/model.bin'));
    const pid = deadPidHere();
    // A new pid namespace whose next pid is one not running here (ns_last_pid is the last
    // one given out); the command after the writer makes sh fork it rather than exec it.
    const writer = spawn(
      'unshare',
      [
        '--pid',
        '--fork',
        '--mount-proc',
        '--kill-child',
        'sh',
        '-c',
        `echo ${pid - 1} > /proc/sys/kernel/ns_last_pid && "$@"; exit $?`,
        'sh',
        process.execPath,
        '--import',
        'tsx',
        join(REPO_ROOT, 'test/cache/temp-writer-child.ts'),
        hint,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'], cwd: REPO_ROOT },
    );
    const done = collect(writer);
    try {
      let said = '';
      writer.stdout!.on('data', (d: Buffer) => (said += d.toString()));
      await waitFor('the writer to write its temp file', () => said.includes('\n'), 30_000);
      assert.equal(said, `wrote ${pid}\n`, 'the writer runs as a pid not running here');
      assert.ok(existsSync(`${hint}.${pid}.tmp`));

      const report = await gcCache(cache, 0);
      assert.deepEqual(report.removedLeftovers, []);
      writer.stdin!.end('rename\n');
      const result = await done;
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `wrote ${pid}\nrenamed\n`);
      assert.equal(readFileSync(hint, 'utf8'), '{"written":"in another pid namespace"}');
    } finally {
      writer.kill('SIGKILL');
      cache.close();
    }
  });

  it('removes such a temp file once it is older than the grace period', async () => {
    const cacheDir = tempDir();
    const cache = await openCache(cacheDir);
    try {
      const hint = hintPath(cacheLayout(cacheDir), sourceKey('http://example.invalid/model.bin'));
      const temp = `${hint}.${deadPidHere()}.tmp`;
      writeFileSync(temp, '{"half":');
      const old = (Date.now() - PID_TEMP_GRACE_MS - 60_000) / 1000;
      utimesSync(temp, old, old);
      const report = await gcCache(cache, 0);
      assert.deepEqual(report.removedLeftovers, [temp.slice(cacheDir.length + 1)]);
      assert.equal(report.freedBytes, '{"half":'.length);
      assert.equal(existsSync(temp), false);
    } finally {
      cache.close();
    }
  });

  it('removes an old one whose pid runs here (pid 1), and one dated far in the future', async () => {
    const cacheDir = tempDir();
    const cache = await openCache(cacheDir);
    try {
      const layout = cacheLayout(cacheDir);
      // An agent as its container's first process, killed between write and rename: pid 1
      // runs here (and again in its restarted container) for ever.
      const fromPid1 = `${hintPath(layout, sourceKey('http://example.invalid/a.bin'))}.1.tmp`;
      const fromTheFuture = `${hintPath(layout, sourceKey('http://example.invalid/b.bin'))}.${deadPidHere()}.tmp`;
      for (const [path, at] of [
        [fromPid1, Date.now() - PID_TEMP_GRACE_MS - 60_000],
        [fromTheFuture, Date.now() + 24 * 60 * 60 * 1000],
      ] as const) {
        writeFileSync(path, '{"half":');
        utimesSync(path, at / 1000, at / 1000);
      }
      assert.ok(isProcessAlive(1));
      const report = await gcCache(cache, 0);
      assert.deepEqual(
        report.removedLeftovers.sort(),
        [fromPid1, fromTheFuture].map((p) => p.slice(cacheDir.length + 1)).sort(),
      );
      assert.equal(existsSync(fromPid1), false);
      assert.equal(existsSync(fromTheFuture), false);
    } finally {
      cache.close();
    }
  });
});
