// The lock on `<out>.part` that keeps two runs to the same output apart: taken at the same
// moment by several processes, exactly one of them gets it, round after round; a lock left
// by a killed run is taken over.
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
    const owners = new Map<number, number>();
    for (const line of results.flatMap((r) => r.stdout.trim().split('\n'))) {
      const [round, outcome] = line.split(' ');
      if (outcome === 'got') owners.set(Number(round), (owners.get(Number(round)) ?? 0) + 1);
    }
    const shared = [...owners].filter(([, count]) => count > 1).map(([round]) => round);
    assert.deepEqual(shared, [], 'rounds in which more than one process held the lock');
    // Some process got it in every round (a process that starts late finds it free).
    assert.equal(owners.size, rounds);
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
});
