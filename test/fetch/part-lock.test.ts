// The lock on `<out>.part` that keeps two runs to the same output apart: taken at the same
// moment by several processes, exactly one of them gets it, round after round; a lock left
// by a killed run is taken over; the lock holds across pid namespaces (two containers of a pod
// sharing the output's volume), and a run restarted as pid 1 takes over the dead pid 1's.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { lockPart, partLockPathFor } from '../../src/fetch/part-lock.js';
import { collect, REPO_ROOT, tempDir } from '../helpers/fixtures.js';

describe('part lock', () => {
  it('has one owner when several processes take it at the same moment', async () => {
    const dir = tempDir();
    const rounds = 25;
    const gapMs = 300;
    // Time for the children to load before the first round.
    const start = Date.now() + 4000;
    const children = [0, 1, 2].map(() =>
      collect(
        spawn(
          process.execPath,
          [
            '--import',
            'tsx',
            join(REPO_ROOT, 'test/fetch/part-lock-child.ts'),
            dir,
            String(start),
            String(rounds),
            String(gapMs),
          ],
          { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT },
        ),
      ),
    );
    const results = await Promise.all(children);
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    // Two processes getting one round's lock in turn is no fault (a child a loaded machine
    // starts late finds it free again); two holding it at once is.
    const owned = new Set<number>();
    const shared: number[] = [];
    for (const line of results.flatMap((r) => r.stdout.trim().split('\n'))) {
      const [round, outcome] = line.split(' ');
      if (outcome === 'got' || outcome === 'shared') owned.add(Number(round));
      if (outcome === 'shared') shared.push(Number(round));
    }
    assert.deepEqual(shared, [], 'rounds in which more than one process held the lock at once');
    // Some process got it in every round (a process that starts late finds it free).
    assert.equal(owned.size, rounds);
    // Nothing left beside the parts: no lock, no owner file.
    assert.deepEqual(readdirSync(dir), []);
  });

  it("takes over a killed run's lock", async () => {
    const dir = tempDir();
    const part = join(dir, 'x.part');
    // A pid that is not running: the lock of a run killed with -9.
    writeFileSync(
      partLockPathFor(part),
      JSON.stringify({ pid: 2 ** 22 + 1, host: (await import('node:os')).hostname() }),
    );
    const unlock = await lockPart(part);
    await assert.rejects(lockPart(part), { code: 'LOOM_ERR_OUTPUT_BUSY' });
    await unlock();
    assert.equal(existsSync(partLockPathFor(part)), false);
    assert.deepEqual(readdirSync(dir), []);
  });

  // Run in a new pid namespace, as a container's process: it sees none of this machine's pids.
  const inNamespace = (part: string, mode: 'once' | 'hold') =>
    spawn(
      'unshare',
      [
        '--pid',
        '--fork',
        '--mount-proc',
        '--kill-child',
        process.execPath,
        '--import',
        'tsx',
        join(REPO_ROOT, 'test/fetch/part-lock-holder.ts'),
        part,
        mode,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT },
    );

  it('a run in another pid namespace finds a live lock busy (it cannot see the owner pid)', async () => {
    const part = join(tempDir(), 'x.part');
    const unlock = await lockPart(part);
    const run = await collect(inNamespace(part, 'once'));
    await unlock();
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), 'busy');
  });

  it('a run restarted as pid 1 takes over the lock a killed pid 1 left', async () => {
    const dir = tempDir();
    const part = join(dir, 'x.part');
    const holder = inNamespace(part, 'hold');
    const holderDone = collect(holder);
    const first = await new Promise<string>((resolve) =>
      holder.stdout!.on('data', (chunk: Buffer) => resolve(chunk.toString().trim())),
    );
    assert.equal(first, 'got 1');
    holder.kill('SIGKILL');
    await holderDone;
    const again = await collect(inNamespace(part, 'once'));
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.trim(), 'got 1');
    assert.deepEqual(readdirSync(dir), []);
  });
});
