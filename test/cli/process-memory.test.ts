// The CLI's hold on its young generation during a long download, and LOOM_DEBUG_MEMORY=1's
// memory log. The hold is checked in a child process, on V8 itself: a Node whose V8 no
// longer reads the growth factor at each doubling would fail here, not silently in a bench.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { randomContent, runLoom, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const MODULE = join(import.meta.dirname, '..', '..', 'src', 'cli', 'process-memory.ts');

/** In a fresh process: optionally report `received` bytes, then keep objects alive through many scavenges. */
function youngGenerationAfter(received: number | undefined): { held: boolean; newSpaceMiB: number } {
  const script = `
    import v8 from 'node:v8';
    import { holdYoungGenerationAfter, youngGenerationHeld } from ${JSON.stringify(MODULE)};
    if (${received !== undefined}) holdYoungGenerationAfter(${received ?? 0});
    const keep = [];
    for (let i = 0; i < 3e6; i++) {
      keep.push({ i, pair: [i, i + 1] });
      if (keep.length > 20000) keep.splice(0, 10000);
    }
    const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    console.log(JSON.stringify({ held: youngGenerationHeld(), newSpaceMiB: young.space_size / 1048576 }));
  `;
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout) as { held: boolean; newSpaceMiB: number };
}

describe('the young generation during a download', () => {
  it('grows with survivors by default, and stays at its size once 64 MiB were received', () => {
    const free = youngGenerationAfter(undefined);
    const early = youngGenerationAfter(64 * 1024 * 1024 - 1);
    const held = youngGenerationAfter(64 * 1024 * 1024);
    assert.equal(free.held, false);
    assert.equal(early.held, false, 'below 64 MiB nothing is changed');
    assert.equal(held.held, true);
    assert.ok(free.newSpaceMiB >= 8, `V8 grew it to ${free.newSpaceMiB} MiB without the hold`);
    assert.ok(early.newSpaceMiB >= 8, `V8 grew it to ${early.newSpaceMiB} MiB below the threshold`);
    assert.ok(held.newSpaceMiB <= 4, `held at ${held.newSpaceMiB} MiB`);
  });
});

describe('LOOM_DEBUG_MEMORY=1', () => {
  const dir = tempDir();
  const content = randomContent(4 * 1024 * 1024);
  let origin: OriginServer;
  after(() => origin?.close());

  it('logs the memory to stderr while `loom fetch` runs, and the download is unchanged', async () => {
    origin = await new OriginServer({ rateLimitBytesPerSecond: 2 * 1024 * 1024 }).listen();
    origin.setFile('/m.bin', content.bytes);
    const out = join(dir, 'm.bin');
    const run = await runLoom(['fetch', origin.url('/m.bin'), '-o', out, '--no-cache', '--workers', '2', '-q'], {
      LOOM_DEBUG_MEMORY: '1',
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(out), content.sha256);
    const lines = run.stderr.split('\n').filter((l) => l.startsWith('loom: memory '));
    // About a second (two connections of 2 MiB/s): a line every 250 ms, and one at the end.
    assert.ok(lines.length >= 2, run.stderr);
    for (const line of lines) {
      assert.match(
        line,
        /^loom: memory t=\d+\.\d\ds rss=\d+\.\d heapTotal=\d+\.\d heapUsed=\d+\.\d new=\d+\.\d external=\d+\.\d arrayBuffers=\d+\.\d MiB$/,
      );
    }

    const quiet = await runLoom(['fetch', origin.url('/m.bin'), '-o', join(dir, 'q.bin'), '--no-cache', '-q']);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, '');
  });
});
