// A process for index-open-race.test.ts: says it is opening the cache index at the root it is
// given, opens it, and says what happened.
import { CacheIndex } from '../../src/cache/cache-index.js';
import { cacheLayout } from '../../src/cache/cache-root.js';

const root = process.argv[2]!;
process.stdout.write('opening\n');
try {
  new CacheIndex(cacheLayout(root)).close();
  process.stdout.write('opened\n');
} catch (err) {
  process.stdout.write(`${(err as Error).message}\n`);
}
