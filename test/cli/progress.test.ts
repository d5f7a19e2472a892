// Progress a person can read. On a terminal (a real pseudo-terminal, read back frame by
// frame): the bar fits the width, keeps rate, ETA and connections at 80 columns, shrinks
// below, never shows "NaN", "ETA NFs" or "0 B/?", and is erased on Ctrl-C. Without a
// terminal: plain lines. At the end: one summary line.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { renderBar, type BarState } from '../../src/cli/progress.js';
import { randomContent, runLoom, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import { frames, loomOnTerminal, screen } from './terminal.js';

const dir = tempDir();
const SIZE = 6 * 1024 * 1024;
const content = randomContent(SIZE);
let server: OriginServer;
after(() => server.close());

async function origin(): Promise<OriginServer> {
  // 1 MB/s per connection: a few seconds of progress to draw.
  server ??= await new OriginServer({ rateLimitBytesPerSecond: 1024 * 1024 }).listen();
  server.setFile('/model.safetensors', content.bytes);
  return server;
}

const NEVER = /NaN|Infinity|undefined|ETA NF|\/\?|ETA -/;

describe('the progress bar on a terminal', () => {
  it('fits 80 columns with percentage, bytes, rate, ETA and connections, and leaves only the summary', async () => {
    const origin_ = await origin();
    const out = join(dir, 'eighty.safetensors');
    const run = loomOnTerminal(['fetch', origin_.url('/model.safetensors'), '-o', out, '--no-cache', '-w', '2'], 80);
    const { code, raw } = await run.done;
    assert.equal(code, 0, raw);
    assert.equal(await sha256OfFile(out), content.sha256);
    const drawn = frames(raw);
    assert.ok(drawn.length > 3, `frames drawn: ${drawn.length}`);
    for (const frame of drawn) {
      assert.ok(frame.length < 80, `frame wider than the terminal: ${frame}`);
      assert.doesNotMatch(frame, NEVER);
    }
    const full = drawn.filter(
      (f) =>
        /\d+%/.test(f) && /MB\/[0-9.]+ MB/.test(f) && /[kM]B\/s/.test(f) && /ETA \d/.test(f) && /\d conns?/.test(f),
    );
    assert.ok(full.length > 0, `no frame shows everything:\n${drawn.join('\n')}`);
    assert.ok(
      full.some((f) => f.startsWith('eighty.safetensors  ')),
      `the name is shown whole:\n${full.join('\n')}`,
    );
    const seen = screen(raw);
    assert.equal(seen.length, 1, `the screen at the end:\n${seen.join('\n')}`);
    assert.match(seen[0]!, /^loom: .*eighty\.safetensors: 6\.29 MB in .* s, .*B\/s, from the origin \(\d+ requests?\)/);
  });

  it('shrinks to 40 columns, keeping the percentage and the rate', async () => {
    const origin_ = await origin();
    const out = join(dir, 'forty.safetensors');
    const run = loomOnTerminal(['fetch', origin_.url('/model.safetensors'), '-o', out, '--no-cache', '-w', '2'], 40);
    const { code, raw } = await run.done;
    assert.equal(code, 0, raw);
    const drawn = frames(raw);
    for (const frame of drawn) {
      assert.ok(frame.length < 40, `frame wider than the terminal: ${frame}`);
      assert.doesNotMatch(frame, NEVER);
    }
    assert.ok(
      drawn.some((f) => /\d+%/.test(f) && /[kM]B\/s/.test(f)),
      `no frame with percentage and rate:\n${drawn.join('\n')}`,
    );
  });

  it('is erased on Ctrl-C, so the message and the exit read on clean lines', async () => {
    const origin_ = await origin();
    const out = join(dir, 'interrupted.safetensors');
    const run = loomOnTerminal(['fetch', origin_.url('/model.safetensors'), '-o', out, '--no-cache', '-w', '1'], 80);
    await waitFor('a frame with a rate', () => frames(run.output()).some((f) => /B\/s/.test(f)), 20_000);
    run.child.stdin!.write('\x03');
    const { code, raw } = await run.done;
    assert.equal(code, 130, raw);
    const seen = screen(raw);
    assert.deepEqual(
      seen,
      [
        'loom: SIGINT: stopping',
        'loom: error: download cancelled; the partial download is kept; rerun the same command to resume',
      ],
      raw,
    );
    assert.equal(existsSync(`${out}.part.journal`), true);
  });
});

describe('progress without a terminal', () => {
  it('prints a plain line at each 10% with bytes, rate and ETA (--progress auto, piped)', async () => {
    const origin_ = await origin();
    const out = join(dir, 'lines.safetensors');
    const run = await runLoom(['fetch', origin_.url('/model.safetensors'), '-o', out, '--no-cache', '-w', '2']);
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stderr.trim().split('\n');
    const progress = lines.filter((l) => /^loom: lines\.safetensors: \d+%, /.test(l));
    assert.ok(progress.length >= 3, run.stderr);
    for (const line of progress) {
      assert.match(line, /^loom: lines\.safetensors: \d+%, [0-9.]+ [kM]?B of 6\.29 MB(, [0-9.]+ [kM]?B\/s, ETA \d)?/);
      assert.doesNotMatch(line, NEVER);
    }
    assert.ok(
      progress.some((l) => /B\/s, ETA \d/.test(l)),
      'rate and ETA once known',
    );
    assert.match(lines[lines.length - 1]!, /^loom: .*lines\.safetensors: 6\.29 MB in /);
  });

  it('--progress none prints only the summary; --progress bar draws without a terminal', async () => {
    const origin_ = await origin();
    const none = await runLoom([
      'fetch',
      origin_.url('/model.safetensors'),
      '-o',
      join(dir, 'n.bin'),
      '--no-cache',
      '--progress',
      'none',
    ]);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stderr.trim().split('\n').length, 1, none.stderr);
    const bar = await runLoom([
      'fetch',
      origin_.url('/model.safetensors'),
      '-o',
      join(dir, 'b.bin'),
      '--no-cache',
      '--progress',
      'bar',
    ]);
    assert.equal(bar.code, 0, bar.stderr);
    assert.ok(frames(bar.stderr).length > 0, bar.stderr);
    const bad = await runLoom(['fetch', origin_.url('/model.safetensors'), '--progress', 'fancy']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--progress <mode>' argument 'fancy' is invalid. must be one of auto, bar, lines, none/);
  });
});

describe('renderBar', () => {
  const state: BarState = {
    label: 'llama-2-7b-chat.Q4_K_M.gguf',
    doneBytes: 1_234_000_000,
    totalBytes: 4_081_004_224,
    rate: 412_000_000,
    activeRequests: 16,
    retries: 0,
  };

  it('fits every width from 120 down to 20 columns', () => {
    for (let width = 120; width >= 20; width--) {
      const line = renderBar(state, width);
      assert.ok(line.length <= width, `${width}: ${line}`);
      assert.match(line, /30%/, `${width}: ${line}`);
    }
    assert.equal(
      renderBar(state, 79),
      'llama-2-7b-chat.Q4_K_M.gguf   30%  1.23 GB/4.08 GB  412 MB/s  ETA 7s  16 conns',
      'at 80 columns the bar gives way to the name',
    );
    const wide = renderBar(state, 119);
    assert.match(wide, /^llama-2-7b-chat\.Q4_K_M\.gguf {2}\[#+-+\] +30%/);
    assert.ok(wide.endsWith('  1.23 GB/4.08 GB  412 MB/s  ETA 7s  16 conns'), wide);
    assert.equal(renderBar(state, 40), '30%  1.23 GB  412 MB/s  ETA 7s');
    assert.equal(renderBar(state, 20), '30%  412 MB/s');
  });

  it('shows no total, percentage or ETA while the size is unknown, and no ETA before a rate', () => {
    const unknown = renderBar({ ...state, totalBytes: undefined, doneBytes: 0, rate: 0 }, 79);
    assert.equal(unknown, 'llama-2-7b-chat.Q4_K_M.gguf  0 B  16 conns');
    const noRate = renderBar({ ...state, rate: 0 }, 79);
    assert.doesNotMatch(noRate, /ETA|\/s/);
    assert.match(renderBar({ ...state, retries: 1 }, 100), /1 retry$/);
  });
});
