// Keeps a download's memory flat by collecting V8's young generation every few MiB received.
// Every socket read allocates a fresh 64 KiB buffer; the engine copies it into a slab at once,
// so it is garbage within microseconds, but V8 collects the young generation only when its
// semi-space (up to 16 MiB of small objects, each holding a 64 KiB buffer outside the heap)
// fills, and until then those buffers stay resident. A minor GC every 8 MiB measured peak RSS
// at 16 workers 104 -> 91 MiB, with no time difference above the noise. Node's
// --max-semi-space-size=1 did the same, but any V8 flag on the command line costs 20-30 ms at
// every start (Node's code cache for its built-in modules no longer matches), and a cache hit
// is mostly start-up.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type MinorGc = (options: { type: 'minor' }) => void;

let collector: MinorGc | null | undefined;

/** V8's gc(), exposed at run time; null where the flag cannot be set (then nothing is done). */
function minorGc(): MinorGc | null {
  if (collector === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      collector = runInNewContext('gc') as MinorGc;
    } catch {
      collector = null;
    }
  }
  return collector;
}

export class YoungGenerationSweeper {
  private sinceLast = 0;

  constructor(private readonly everyBytes: number) {}

  received(bytes: number): void {
    this.sinceLast += bytes;
    if (this.sinceLast < this.everyBytes) return;
    this.sinceLast = 0;
    minorGc()?.({ type: 'minor' });
  }
}
