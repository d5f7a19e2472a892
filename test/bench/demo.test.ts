// `npm run demo` at a small size: it prints the table with every scenario verified, the
// origin sends about one copy for three nodes at once, and it leaves nothing behind: no
// process it started is alive, its working folder is gone.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { REPO_ROOT, collect } from '../helpers/fixtures.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('npm run demo', () => {
  it('tells the whole story at 32 MiB, verifies every output and stops everything it started', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/demo.ts', '--size', '32MiB'], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const run = await collect(child);
    const out = run.stdout + run.stderr;
    assert.equal(run.code, 0, out);
    for (const scenario of [
      '1 connection',
      'loom fetch, defaults',
      'cache hit',
      '2nd node, from a peer',
      '3 nodes at once',
    ])
      assert.match(
        out,
        new RegExp(`\\| ${scenario.replace(/[.,]/g, '\\$&')} +\\|`),
        `the table has a row for ${scenario}`,
      );
    assert.match(out, /every output verified/);
    assert.doesNotMatch(out, /MISMATCH/);
    const peerRow = /\| 2nd node, from a peer .*\| origin (\d+) MB, peers (\d+) MB/.exec(out);
    assert.ok(peerRow, out);
    assert.equal(Number(peerRow[1]), 0, 'the second node took nothing from the origin');
    const copies = /Origin egress for the three nodes at once: ([\d.]+) copies/.exec(out);
    assert.ok(copies && Number(copies[1]) <= 1.1, `three nodes at once: ${copies?.[1]} copies from the origin`);
    const stopped = /Stopped: (\d+) processes \(pids ([\d ]*)\); removed (\S+)/.exec(out);
    assert.ok(stopped, out);
    assert.equal(Number(stopped[1]), 7, 'a control plane and three agents, restarted once');
    for (const pid of stopped[2]!.split(' ').map(Number)) assert.equal(isAlive(pid), false, `pid ${pid} still runs`);
    assert.equal(existsSync(stopped[3]!), false, 'the working folder is removed');
  });
});
