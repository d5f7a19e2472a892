// Runs one fetchFile in a child process, so a test can kill -9 it half way: node --import tsx
// test/fetch/fetch-child.ts URL OUT [JSON options]. Prints the result's stats as JSON.
import { fetchFile } from '../../src/index.js';

const [url, out, json] = process.argv.slice(2);
const result = await fetchFile(url!, out!, json ? (JSON.parse(json) as Record<string, unknown>) : {});
process.stdout.write(JSON.stringify(result.stats));
