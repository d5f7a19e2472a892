// The Hub's plain-HTTP client path, for the hub benchmark: @huggingface/hub's
// snapshotDownload (files one after another, one stream each) into an HF cache.
// Usage: node --import tsx bench/clients/hf-snapshot.ts ENDPOINT REPO CACHE_DIR
import { snapshotDownload } from '@huggingface/hub';

const [endpoint, repo, cacheDir] = process.argv.slice(2);
if (!endpoint || !repo || !cacheDir) {
  console.error('usage: hf-snapshot.ts ENDPOINT REPO CACHE_DIR');
  process.exit(2);
}
console.debug = () => undefined;
const dir = await snapshotDownload({ repo, cacheDir, hubUrl: endpoint });
process.stdout.write(`${dir}\n`);
