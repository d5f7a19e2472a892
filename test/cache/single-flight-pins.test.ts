// Processes racing for one URL when a digest is pinned, or the downloading process fails:
// every ordering of an owner pinned to a wrong digest (or unpinned) and waiters unpinned,
// pinned wrong or pinned right. The origin serves the file once whatever the pins; a waiter
// pinned to another digest than the owner got fails at once naming both, keeping nothing; an
// owner that failed is said to have failed, not to be gone, and the waiter then tries itself.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cacheLayout } from '../../src/cache/cache-root.js';
import { keyHash, sourceFailurePath } from '../../src/cache/single-flight.js';
import { cacheKey } from '../../src/cache/source-key.js';
import { lockHolderPid } from '../../src/core/file-lock.js';
import {
  collect,
  randomContent,
  sha256OfFile,
  startLoom,
  tempDir,
  waitFor,
  type RunResult,
} from '../helpers/fixtures.js';
import { cacheTestBed, originGate } from './cache-fixtures.js';

const SIZE = 6 * 1024 * 1024 + 5;
const content = randomContent(SIZE);
const WRONG = 'e'.repeat(64);
const OTHER_WRONG = 'a'.repeat(64);
const dir = tempDir();
// 1 MiB/s a connection, two connections: the owner takes about three seconds.
const { origin, freshCache } = cacheTestBed(content.bytes, dir, { rateLimitBytesPerSecond: 1024 * 1024 });

interface Fetching {
  child: ChildProcess;
  out: string;
  done: Promise<RunResult>;
  said: () => string;
}

function fetchProcess(url: string, name: string, cacheDir: string, flags: string[] = []): Fetching {
  const out = join(dir, `${name}.bin`);
  const child = startLoom(['fetch', url, '-o', out, '-w', '2', '--chunk-size', '1MiB', ...flags], {
    LOOM_CACHE_DIR: cacheDir,
  });
  let said = '';
  child.stderr?.on('data', (d: Buffer) => (said += d.toString()));
  return { child, out, done: collect(child), said: () => said };
}

async function holdsTheLock(cacheDir: string, pid: number | undefined): Promise<void> {
  await waitFor(
    'the owner to hold the source lock',
    () => readdirSync(join(cacheDir, 'locks')).some((f) => lockHolderPid(join(cacheDir, 'locks', f)) === pid),
    30_000,
  );
}

/** Waits until every waiter says it waits, then lets the owner's origin answer (see originGate). */
async function waiting(gate: { open(): void }, ...waiters: Fetching[]): Promise<void> {
  for (const w of waiters) {
    await waitFor('a waiter to wait', () => w.said().includes('waiting for another process'), 30_000);
  }
  gate.open();
}

const notGone = /is gone|taking over/;

describe('single flight with pinned digests', () => {
  it('an owner pinned to a wrong digest: its download is kept for the waiters, the origin serves it once', async () => {
    const gate = originGate();
    const server = await origin({ fault: gate.fault });
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    const owner = fetchProcess(url, 'owner-wrong', cacheDir, ['--sha256', WRONG]);
    await holdsTheLock(cacheDir, owner.child.pid);
    const unpinned = fetchProcess(url, 'waiter-unpinned', cacheDir);
    const samePin = fetchProcess(url, 'waiter-same-wrong', cacheDir, ['--sha256', WRONG]);
    const otherPin = fetchProcess(url, 'waiter-other-wrong', cacheDir, ['--sha256', OTHER_WRONG]);
    const right = fetchProcess(url, 'waiter-right', cacheDir, ['--sha256', content.sha256]);
    await waiting(gate, unpinned, samePin, otherPin, right);
    const [o, u, s, x, r] = await Promise.all([owner, unpinned, samePin, otherPin, right].map((p) => p.done));

    // The owner: its pin missed, nothing at its output, both digests named.
    assert.equal(o!.code, 4, o!.stderr);
    assert.match(o!.stderr, new RegExp(`sha256 mismatch .*expected ${WRONG}, got ${content.sha256}`));
    assert.equal(existsSync(owner.out), false);

    // Waiters pinned to another digest than the owner got fail at once, naming both and the other process.
    for (const [run, pin, fetching] of [
      [s!, WRONG, samePin],
      [x!, OTHER_WRONG, otherPin],
    ] as const) {
      assert.equal(run.code, 4, run.stderr);
      assert.match(run.stderr, new RegExp(`expected ${pin}, got ${content.sha256}.*another process`));
      assert.doesNotMatch(run.stderr, notGone);
      assert.equal(existsSync(fetching.out), false, 'nothing kept at the output');
    }
    // The unpinned waiter and the one pinned to what the origin serves take the owner's download.
    for (const [run, fetching] of [
      [u!, unpinned],
      [r!, right],
    ] as const) {
      assert.equal(run.code, 0, run.stderr);
      assert.doesNotMatch(run.stderr, notGone);
      assert.equal(await sha256OfFile(fetching.out), content.sha256);
    }
    // One download of the file for the five processes (and a byte or two of probes).
    assert.ok(server.bytesServed <= SIZE + 4, `origin served ${server.bytesServed} bytes for a ${SIZE}-byte file`);
  });

  it('loom fetch --help says what a missed --sha256 leaves: nothing at the output, the download in the node cache', async () => {
    const help = await collect(startLoom(['fetch', '--help']));
    assert.equal(help.code, 0, help.stderr);
    // The option's description, however the help wraps it.
    const text = help.stdout.replace(/\s+/g, ' ');
    const line = text.slice(text.indexOf('--sha256 <hex>'), text.indexOf('-H, --header'));
    assert.ok(line.length > 0, help.stdout);
    assert.doesNotMatch(line, /keeps nothing/);
    assert.match(line, /nothing at the output/);
    assert.match(line, /node cache keeps/);
  });

  it('an unpinned owner: a waiter pinned wrong fails at once naming both digests, one pinned right takes it', async () => {
    const gate = originGate();
    const server = await origin({ fault: gate.fault });
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    const owner = fetchProcess(url, 'owner-unpinned', cacheDir);
    await holdsTheLock(cacheDir, owner.child.pid);
    const wrong = fetchProcess(url, 'unpinned-owner-waiter-wrong', cacheDir, ['--sha256', WRONG]);
    const right = fetchProcess(url, 'unpinned-owner-waiter-right', cacheDir, ['--sha256', content.sha256]);
    await waiting(gate, wrong, right);
    const [o, w, r] = await Promise.all([owner.done, wrong.done, right.done]);
    assert.equal(o.code, 0, o.stderr);
    assert.equal(await sha256OfFile(owner.out), content.sha256);
    assert.equal(w.code, 4, w.stderr);
    assert.match(w.stderr, new RegExp(`expected ${WRONG}, got ${content.sha256}.*another process`));
    assert.doesNotMatch(w.stderr, notGone);
    assert.equal(existsSync(wrong.out), false);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256OfFile(right.out), content.sha256);
    assert.ok(server.bytesServed <= SIZE + 4, `origin served ${server.bytesServed} bytes for a ${SIZE}-byte file`);
  });

  it('after an owner pinned wrong has failed, a rerun pinned right is a hit: the origin sends nothing', async () => {
    const server = await origin({ rateLimitBytesPerSecond: undefined });
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    const owner = await fetchProcess(url, 'alone-wrong', cacheDir, ['--sha256', WRONG]).done;
    assert.equal(owner.code, 4, owner.stderr);
    assert.equal(server.bytesServed, SIZE);
    server.resetStats();
    const rerun = fetchProcess(url, 'alone-right', cacheDir, ['--sha256', content.sha256]);
    const done = await rerun.done;
    assert.equal(done.code, 0, done.stderr);
    assert.equal(await sha256OfFile(rerun.out), content.sha256);
    assert.equal(server.bytesServed, 0);
  });

  it('an owner that fails is said to have failed, not to be gone; the waiter then downloads it itself', async () => {
    let refuseOwner = false;
    const gate = originGate();
    const server = await origin({
      // The owner's requests carry a header of their own (not a credential: the same cache
      // key); once the waiter waits, the origin refuses them.
      fault: (ctx) =>
        refuseOwner && ctx.headers['x-test-role'] === 'owner' ? { kind: 'status', status: 404 } : gate.fault(),
    });
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    const owner = fetchProcess(url, 'failing-owner', cacheDir, ['-H', 'X-Test-Role: owner']);
    await holdsTheLock(cacheDir, owner.child.pid);
    const waiter = fetchProcess(url, 'after-failure', cacheDir);
    await waiting(gate, waiter);
    // Set before the owner's next request arrives: what the gate held is answered, the rest refused.
    refuseOwner = true;
    const [o, w] = await Promise.all([owner.done, waiter.done]);
    assert.notEqual(o.code, 0, 'the owner failed');
    assert.match(o.stderr, /404/);
    assert.equal(w.code, 0, w.stderr);
    assert.match(
      w.stderr,
      new RegExp(`the process that was downloading it \\(pid ${owner.child.pid}\\) failed \\(.*404`),
    );
    assert.doesNotMatch(w.stderr, notGone);
    assert.equal(await sha256OfFile(waiter.out), content.sha256);
  });

  it('an owner stopped with Ctrl-C is said to be cancelled, not gone; the waiter resumes its partial', async () => {
    const gate = originGate();
    const server = await origin({ fault: gate.fault });
    const cacheDir = freshCache();
    const url = server.url('/model.bin');
    const owner = fetchProcess(url, 'cancelled-owner', cacheDir);
    await holdsTheLock(cacheDir, owner.child.pid);
    const waiter = fetchProcess(url, 'after-cancel', cacheDir);
    await waiting(gate, waiter);
    await waitFor('the owner to have 2 MiB', () => server.bytesServed >= 2 * 1024 * 1024, 30_000);
    owner.child.kill('SIGINT');
    const [o, w] = await Promise.all([owner.done, waiter.done]);
    assert.equal(o.code, 130, o.stderr);
    assert.equal(w.code, 0, w.stderr);
    assert.match(
      w.stderr,
      new RegExp(`the process that was downloading it \\(pid ${owner.child.pid}\\) failed \\(download cancelled\\)`),
    );
    assert.doesNotMatch(w.stderr, notGone);
    assert.match(w.stderr, /resumed from the partial file/, 'the waiter resumed the partial the owner kept');
    assert.equal(await sha256OfFile(waiter.out), content.sha256);
    assert.ok(server.bytesServed < 2 * SIZE, `origin served ${server.bytesServed} bytes for a ${SIZE}-byte file`);
  });

  it('something else at the failed-owner record (a directory, a symlink to a FIFO) neither fails nor hangs a fetch', async () => {
    const server = await origin({ rateLimitBytesPerSecond: undefined });
    const url = server.url('/model.bin');
    const record = (cacheDir: string) => sourceFailurePath(cacheLayout(cacheDir), keyHash(cacheKey(url)));
    // A directory: it cannot be read nor removed as a file.
    const withDir = freshCache();
    mkdirSync(record(withDir), { recursive: true });
    // A symlink to a FIFO nobody writes: reading it would block while holding the lock.
    const withFifo = freshCache();
    mkdirSync(join(withFifo, 'locks'));
    const fifo = join(dir, 'nobody-writes.fifo');
    execFileSync('mkfifo', [fifo]);
    symlinkSync(fifo, record(withFifo));
    for (const [cacheDir, name] of [
      [withDir, 'planted-dir'],
      [withFifo, 'planted-fifo'],
    ] as const) {
      server.resetStats();
      const fetching = fetchProcess(url, name, cacheDir);
      const timer = setTimeout(() => fetching.child.kill('SIGKILL'), 30_000);
      const run = await fetching.done.finally(() => clearTimeout(timer));
      assert.equal(run.signal, null, `${name}: the fetch hung on the record and was killed`);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(await sha256OfFile(fetching.out), content.sha256);
      assert.equal(server.bytesServed, SIZE);
    }
  });

  for (const [ownerFlags, waiterFlags, what] of [
    [['--sha256', content.sha256], [], 'pinned owner, unpinned waiter'],
    [[], ['--sha256', content.sha256], 'unpinned owner, pinned waiter'],
  ] as const) {
    it(`an owner killed -9 mid-download is taken over and its partial resumed (${what})`, async () => {
      const gate = originGate();
      const server = await origin({ fault: gate.fault });
      const cacheDir = freshCache();
      const url = server.url('/model.bin');
      const name = what.replace(/\W+/g, '-');
      const owner = fetchProcess(url, `killed-${name}`, cacheDir, [...ownerFlags]);
      await holdsTheLock(cacheDir, owner.child.pid);
      const waiter = fetchProcess(url, `takes-over-${name}`, cacheDir, [...waiterFlags]);
      await waiting(gate, waiter);
      // Past the first journal (written every 500 ms, and per 1/32 of the file).
      await waitFor('the owner to have 3 MiB', () => server.bytesServed >= 3 * 1024 * 1024, 30_000);
      owner.child.kill('SIGKILL');
      const [, w] = await Promise.all([owner.done, waiter.done]);
      assert.equal(w.code, 0, w.stderr);
      assert.match(w.stderr, new RegExp(`\\(pid ${owner.child.pid}\\) is gone; taking over its partial`));
      assert.match(w.stderr, /resumed from the partial file/, 'the waiter resumed the partial the owner kept');
      assert.equal(await sha256OfFile(waiter.out), content.sha256);
      // The owner's 3 MiB and the rest: not the whole file again.
      assert.ok(
        server.bytesServed < SIZE + 2 * 1024 * 1024,
        `origin served ${server.bytesServed} bytes for a ${SIZE}-byte file`,
      );
    });
  }
});
