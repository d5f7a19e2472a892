// The CLI's hold on its own process's memory during a long download (the library changes
// nothing in its host's V8; the `loom` process is the CLI's own), and the memory log behind
// LOOM_DEBUG_MEMORY=1.
//
// Why the young generation: V8 doubles it (up to 16 MiB per semi-space, 32 MiB in all)
// whenever the bytes that survived its scavenges since the last doubling exceed its size.
// A download keeps a steady few hundred KB alive at any moment (requests and slab writes in
// flight), so over enough gigabytes it always reaches the maximum: that was 121-123 MiB
// peak RSS for 4 GiB at 64 workers, against 88-93 MiB at 16 (README, "Benchmarks"). The
// semi-space's maximum is fixed when the isolate is made (a flag on the command line, which
// costs every start 20-30 ms: Node's code cache for its built-in modules stops matching),
// but the growth factor is read at each doubling, so setting it to 1 once a download is
// under way keeps the size reached by then. Set only past FREEZE_AFTER_BYTES received: a
// cache hit or a small file never changes a flag, and by then every module the download
// needs is loaded (modules compiled after a flag change miss Node's code cache).
import v8 from 'node:v8';

/** Bytes received before the young generation is held at its size. */
export const FREEZE_AFTER_BYTES = 64 * 1024 * 1024;

let held = false;

/** Holds V8's young generation at its current size once `receivedBytes` passes FREEZE_AFTER_BYTES. */
export function holdYoungGenerationAfter(receivedBytes: number): void {
  if (held || receivedBytes < FREEZE_AFTER_BYTES) return;
  held = true;
  v8.setFlagsFromString('--semi-space-growth-factor=1');
}

/** Whether holdYoungGenerationAfter has changed the flag in this process. */
export function youngGenerationHeld(): boolean {
  return held;
}

const MiB = 1024 * 1024;
const MEMORY_LOG_MS = 250;

/**
 * With LOOM_DEBUG_MEMORY=1, writes the process's memory to stderr every 250 ms: RSS, the
 * main isolate's heap (and its young generation, `new`), external memory and ArrayBuffers
 * (the slabs), so a peak can be traced to what grew. Returns a stop function.
 */
export function startMemoryLog(env: NodeJS.ProcessEnv = process.env): () => void {
  if (env.LOOM_DEBUG_MEMORY !== '1') return () => undefined;
  const started = performance.now();
  const mib = (bytes: number): string => (bytes / MiB).toFixed(1);
  const line = (): void => {
    const m = process.memoryUsage();
    const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    process.stderr.write(
      `loom: memory t=${((performance.now() - started) / 1000).toFixed(2)}s rss=${mib(m.rss)} ` +
        `heapTotal=${mib(m.heapTotal)} heapUsed=${mib(m.heapUsed)} new=${mib(young?.space_size ?? 0)} ` +
        `external=${mib(m.external)} arrayBuffers=${mib(m.arrayBuffers)} MiB\n`,
    );
  };
  const timer = setInterval(line, MEMORY_LOG_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    line();
  };
}
