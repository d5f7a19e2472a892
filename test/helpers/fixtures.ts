// Shared test fixtures: temporary directories, random content with its digest, and a
// runner for the built `loom` binary.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after } from 'node:test';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
export const LOOM_BIN = join(REPO_ROOT, 'bin', 'loom.cjs');

/** A fresh temporary directory, removed when the test file finishes (call at top level). */
export function tempDir(prefix = 'loom-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export function randomContent(size: number): { bytes: Buffer; sha256: string } {
  const bytes = randomBytes(size);
  return { bytes, sha256: sha256Of(bytes) };
}

export function sha256Of(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export { sha256OfFile } from '../../src/cache/blob-store.js';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The cache the spawned `loom` processes of this test file use unless told otherwise. */
let defaultCacheDir: string | undefined;
function testCacheDir(): string {
  defaultCacheDir ??= tempDir('loom-cache-');
  return defaultCacheDir;
}

/** `loom` processes of this test file still running. */
const running = new Set<ChildProcess>();
// A test that failed while a process it started still ran (a waiter whose owner never came, a
// fetch from a server that never answers) must not leave it behind: its pipes would keep the
// test file's process alive until the runner's timeout, long after the failure. Registered as
// this module loads, at a test file's top level, so it runs once all the file's tests are done.
after(() => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts `loom ARGS`; the caller may kill it. */
export function startLoom(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): ChildProcess {
  const child = spawn(process.execPath, [LOOM_BIN, ...args], {
    env: { ...process.env, LOOM_CACHE_DIR: testCacheDir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd,
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

export function collect(child: ChildProcess): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolvePromise) => {
    child.on('close', (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
  });
}

export function runLoom(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<RunResult> {
  return collect(startLoom(args, env, cwd));
}

/**
 * Polls `check` every 50 ms until it yields a value (not undefined, not false) or `timeoutMs`
 * passes. The default is generous: it only bounds a failure, and a loaded CI machine may take
 * seconds to start a process or to run an agent's next scan.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await Promise.resolve()
      .then(check)
      .catch(() => undefined);
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
