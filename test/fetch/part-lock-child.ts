// Takes part locks at set moments, for the part-lock race test: node --import tsx
// test/fetch/part-lock-child.ts DIR START_MS ROUNDS GAP_MS. In round i it waits for
// START_MS + i * GAP_MS (spinning the last milliseconds, so that the children start together),
// tries lockPart(DIR/i.part), holds what it got for half the gap, and prints "i got|busy", or
// "i shared" when another process held the lock at the same time. Two processes may both get
// a round's lock one after the other (one started late on a loaded machine finds it free):
// what must never happen is both holding it at once, which a marker created exclusively
// while holding tells (created after taking the lock, removed before letting it go).
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { lockPart } from '../../src/fetch/part-lock.js';

const [dir, start, rounds, gap] = process.argv.slice(2);
for (let i = 0; i < Number(rounds); i++) {
  const at = Number(start) + i * Number(gap);
  await sleep(Math.max(0, at - Date.now() - 5));
  while (Date.now() < at) {
    /* spin: a timer wakes up a millisecond or more late */
  }
  try {
    const unlock = await lockPart(join(dir!, `${i}.part`));
    const marker = join(dir!, `${i}.held`);
    let alone = true;
    try {
      writeFileSync(marker, String(process.pid), { flag: 'wx' });
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err;
      alone = false;
    }
    process.stdout.write(`${i} ${alone ? 'got' : 'shared'}\n`);
    await sleep(Number(gap) / 2);
    if (alone) rmSync(marker);
    await unlock();
  } catch (err) {
    if ((err as { code?: string }).code !== 'LOOM_ERR_OUTPUT_BUSY') throw err;
    process.stdout.write(`${i} busy\n`);
  }
}
