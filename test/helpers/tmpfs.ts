// A small tmpfs for disk-full and read-only tests. Mounting needs root, which CI and the
// development machines have; without it these tests fail loudly rather than skip.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

export function mountTmpfs(sizeBytes: number, options: { readOnly?: boolean } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'loom-tmpfs-'));
  const opts = [`size=${sizeBytes}`, ...(options.readOnly ? ['ro'] : [])].join(',');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    throw new Error(`these tests mount a tmpfs and need root: ${(err as Error).message}`);
  }
  after(() => {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}
