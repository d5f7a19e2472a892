#!/usr/bin/env -S node --max-semi-space-size=1
// The `loom` command: runs the built CLI (npm run build makes dist/).
// The small young generation keeps socket buffers from piling up between collections:
// it cut peak RSS of a 16-worker download from ~100 MB to ~87 MB at the same speed.
import { main } from '../dist/bin/loom.js';

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`loom: internal error: ${err && err.stack ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  },
);
