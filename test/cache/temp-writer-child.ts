// A writer of a cache record caught between its write and its rename, for the gc test run in
// another pid namespace: node --import tsx test/cache/temp-writer-child.ts PATH. Writes
// `PATH.<pid>.tmp` as the cache's record writers do (hit-hints.ts, copy-stamps.ts), prints
// "wrote <pid>", then renames it over PATH when a line comes on stdin and prints "renamed"
// (or "gone" when the temp file was removed meanwhile).
import { renameSync, writeFileSync } from 'node:fs';

const [path] = process.argv.slice(2) as [string];
const temp = `${path}.${process.pid}.tmp`;
writeFileSync(temp, '{"written":"in another pid namespace"}');
process.stdout.write(`wrote ${process.pid}\n`);
process.stdin.once('data', () => {
  try {
    renameSync(temp, path);
    process.stdout.write('renamed\n');
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
    process.stdout.write('gone\n');
  }
  process.stdin.destroy();
});
