// Issue 3's scenarios: the whole-process time of a cache hit for a 1 GiB and an 8 GiB file
// against `node -e 0`, and the origin bytes served when 8 processes on one node ask for
// the same file at once.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { OriginServer } from '../test/support/origin-server.js';
import { DATA_DIR, GiB, LOOM_BIN, dataFile, median, printTable, ratio, runChecked, runCommand } from './lib.js';

const OUT_DIR = join(DATA_DIR, 'out');

export async function cacheHitScenario(): Promise<Record<string, unknown>> {
  mkdirSync(OUT_DIR, { recursive: true });
  const cacheDir = join(DATA_DIR, 'cache-hit-bench');
  rmSync(cacheDir, { recursive: true, force: true });
  const env = { LOOM_CACHE_DIR: cacheDir };
  const origin = await new OriginServer().listen();
  const rows: Array<Record<string, string | number>> = [];
  try {
    const sizes = [GiB, 8 * GiB];
    for (const size of sizes) {
      const name = `hit-${size}.bin`;
      const file = dataFile(name, size);
      origin.setFile(`/${name}`, { content: { file, size }, etag: `"bench-${size}"` });
      await runChecked(LOOM_BIN, ['fetch', origin.url(`/${name}`), '-o', join(OUT_DIR, name), '-q'], env);
      rmSync(join(OUT_DIR, name), { force: true });
      // The blob is in the cache now; a 304 needs no bytes, so the source file can go.
      if (size > GiB) rmSync(file, { force: true });
    }
    const samples: Record<string, number[]> = { 'node -e 0': [] };
    for (const size of sizes) samples[`${size / GiB} GiB`] = [];
    for (let round = 0; round < 15; round++) {
      samples['node -e 0']!.push((await runChecked(process.execPath, ['-e', '0'])).seconds);
      for (const size of sizes) {
        const name = `hit-${size}.bin`;
        const out = join(OUT_DIR, name);
        const run = await runChecked(LOOM_BIN, ['fetch', origin.url(`/${name}`), '-o', out, '-q'], env);
        samples[`${size / GiB} GiB`]!.push(run.seconds);
        rmSync(out, { force: true });
      }
    }
    const base = median(samples['node -e 0']!);
    for (const [label, values] of Object.entries(samples)) {
      const ms = median(values) * 1000;
      rows.push({
        run: label === 'node -e 0' ? label : `loom fetch, cache hit, ${label}`,
        'median ms': ms.toFixed(1),
        'vs node -e 0': ratio(ms / 1000, base),
      });
    }
    printTable('Cache hit, whole process (median of 15, revalidated with one conditional request)', rows);
    return { rows };
  } finally {
    await origin.close();
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

export async function singleFlightScenario(processes = 8, size = GiB): Promise<Record<string, unknown>> {
  mkdirSync(OUT_DIR, { recursive: true });
  const cacheDir = join(DATA_DIR, 'cache-flight-bench');
  rmSync(cacheDir, { recursive: true, force: true });
  const file = dataFile(`plain-${size}.bin`, size);
  const origin = await new OriginServer({ rateLimitBytesPerSecond: 50e6 }).listen();
  origin.setFile('/weights.bin', { file, size });
  try {
    // Baseline: what one process alone makes the origin serve (tail splitting costs a little).
    await runChecked(LOOM_BIN, [
      'fetch',
      origin.url('/weights.bin'),
      '-o',
      join(OUT_DIR, 'flight-solo.bin'),
      '-q',
      '--no-cache',
    ]);
    rmSync(join(OUT_DIR, 'flight-solo.bin'), { force: true });
    const solo = origin.bytesServed;
    origin.resetStats();
    const outs = Array.from({ length: processes }, (_, i) => join(OUT_DIR, `flight-${i}.bin`));
    const started = performance.now();
    const runs = await Promise.all(
      outs.map((out) =>
        runCommand(LOOM_BIN, ['fetch', origin.url('/weights.bin'), '-o', out, '--json'], { LOOM_CACHE_DIR: cacheDir }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const failed = runs.filter((r) => r.code !== 0);
    if (failed.length) throw new Error(`loom failed: ${failed[0]!.stderr}`);
    const outcomes = runs.map((r) => (JSON.parse(r.stdout) as { cache: string }).cache);
    const rows = [
      {
        processes,
        file: `${size / GiB} GiB`,
        'origin bytes served': origin.bytesServed,
        'x file size': (origin.bytesServed / size).toFixed(3),
        'x one process alone': (origin.bytesServed / solo).toFixed(3),
        misses: outcomes.filter((o) => o === 'miss').length,
        hits: outcomes.filter((o) => o === 'hit').length,
        'wall s': seconds.toFixed(2),
      },
    ];
    printTable(`${processes} processes on one node fetch one file at once`, rows);
    for (const out of outs) rmSync(out, { force: true });
    return { rows };
  } finally {
    await origin.close();
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

export const cacheScenarios = {
  'cache-hit': () => cacheHitScenario(),
  'cache-single-flight': () => singleFlightScenario(),
};
