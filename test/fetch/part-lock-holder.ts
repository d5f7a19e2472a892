// Takes one part lock for the part-lock tests run in other pid namespaces: node --import tsx
// test/fetch/part-lock-holder.ts PART [hold]. Prints "got" or "busy"; with "hold", keeps the
// lock until it is killed, else lets it go.
import { lockPart } from '../../src/fetch/part-lock.js';

const [part, mode] = process.argv.slice(2);
try {
  const unlock = await lockPart(part!);
  process.stdout.write(`got ${process.pid}\n`);
  if (mode === 'hold') setInterval(() => undefined, 60_000);
  else await unlock();
} catch (err) {
  if ((err as { code?: string }).code !== 'LOOM_ERR_OUTPUT_BUSY') throw err;
  process.stdout.write('busy\n');
}
